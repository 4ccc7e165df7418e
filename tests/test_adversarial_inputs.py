"""Inputs at the edges get results or an error that names the limit or the argument
(issue 13: defects 10, 11 and 12, and the unclear errors), and roles sharing a
backend do not see each other's queries through the query cache."""

import psycopg
import pytest
from helpers import insert, model_calls
from psycopg import sql


def _words(n: int, prefix: str = "w") -> list[str]:
    """n distinct words the english configuration keeps as they are."""
    return [f"{prefix}{i}x" for i in range(n)]


@pytest.mark.parametrize("index_built", [False, True], ids=["scan", "keyword index"])
def test_a_query_of_30000_distinct_words_finds_documents(db, index_built):
    """Defect 10: the keyword leg's OR of the query's lexemes was a flat tsquery
    chain, and 30,000 of them exceeded max_stack_depth."""
    words = _words(30000)
    insert(db, f"one {words[17]} here", f"another with {words[29999]} and {words[5]}", "nothing")
    if index_built:
        db.execute("select hybrid_search_refresh()")
    query = " ".join(words)
    for function in ("keyword_search", "keyword_search_scan"):
        ids = [r[0] for r in db.execute(f"select id from {function}(%s, 5)", [query])]
        assert sorted(ids) == [1, 2], function
    rows = db.execute("select id, keyword_rank from hybrid_search(%s, 3)", [query]).fetchall()
    assert {i for i, rank in rows if rank is not None} == {1, 2}


def _tsvector_breaker(db) -> str:
    """A text within max_content_chars (1,000,000 by default) whose tsvector is over
    PostgreSQL's 1 MB: 120,000 distinct words, 840 kB."""
    text = " ".join(_words(120000, prefix="t"))
    limit = db.execute("select max_content_chars from hybrid_search_settings").fetchone()[0]
    assert len(text) < limit
    return text


def test_a_document_over_the_tsvector_limit_gets_an_error_naming_both_limits(db):
    """Defect 11: such a document was refused with PostgreSQL's bare 'string is too
    long for tsvector', although it is under max_content_chars."""
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as raised:
        insert(db, _tsvector_breaker(db))
    diag = raised.value.diag
    assert "1 MB tsvector limit" in diag.message_primary
    assert "max_content_chars (1000000)" in diag.message_detail
    assert "string is too long for tsvector" in diag.message_detail
    assert "split the document" in diag.message_hint
    assert db.execute("select count(*) from documents").fetchone()[0] == 0
    # a document just under the threshold of the check, and a long ordinary one, still go in
    insert(db, "word " * 26000, "sales " * 150000)
    assert db.execute("select count(*) from documents where fts is not null").fetchone()[0] == 2


def test_a_query_over_the_tsvector_limit_gets_an_error_naming_it(db):
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as raised:
        db.execute("select * from keyword_search(%s, 3)", [_tsvector_breaker(db)])
    assert "keyword_search: a query of" in raised.value.diag.message_primary
    assert "1 MB limit" in raised.value.diag.message_primary


@pytest.fixture
def two_roles(db):
    names = ["hs_cache_alice", "hs_cache_bob"]
    for name in names:
        db.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("create role {}").format(sql.Identifier(name)))
        db.execute("select hybrid_search_grant(%s::regrole, 'search')", [name])
    yield names
    db.execute("reset role")
    for name in names:
        db.execute("select hybrid_search_revoke(%s::regrole)", [name])
        db.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def _hits(db) -> int:
    return db.execute("select query_cache_hits from hybrid_search_model_stats()").fetchone()[0]


def test_the_query_cache_is_per_role(db, two_roles):
    """Defect 12: a role that SET ROLE lets share a backend saw a cache hit on another
    role's exact phrase in hybrid_search_model_stats."""
    alice, bob = two_roles
    phrase = "the merger with contoso closes on friday"
    db.execute(sql.SQL("set role {}").format(sql.Identifier(alice)))
    db.execute("select embed_dense(%s)", [phrase])
    db.execute("reset role")
    db.execute(sql.SQL("set role {}").format(sql.Identifier(bob)))
    hits, calls = _hits(db), model_calls(db)
    db.execute("select embed_dense(%s)", [phrase])
    assert (_hits(db), model_calls(db)) == (hits, calls + 1), "bob's query was alice's cache hit"
    db.execute("select embed_dense(%s)", [phrase])
    assert (_hits(db), model_calls(db)) == (hits + 1, calls + 1), "bob's own repeat is a hit"
    db.execute("reset role")
    db.execute(sql.SQL("set role {}").format(sql.Identifier(alice)))
    db.execute("select embed_sparse(%s)", [phrase])
    assert (_hits(db), model_calls(db)) == (hits + 2, calls + 1), "alice's own repeat is a hit"


@pytest.mark.parametrize(
    "argument, value",
    [
        ("dense_weight", 1e308),
        ("sparse_weight", 1e10),
        ("keyword_weight", float("inf")),
        ("colbert_weight", 1e308),
        ("rrf_k", 2147483647),
    ],
)
def test_an_out_of_range_argument_is_named(db, argument, value):
    insert(db, "quarterly sales", "the sales team")
    for call in (
        f"select * from hybrid_search('sales', 3, {argument} => %s)",
        "select * from hybrid_search('sales', (select embed_dense('sales')),"
        f" (select embed_sparse('sales')), 3, fusion => 'raw', {argument} => %s)",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
            db.execute(call, [value])
        assert f"hybrid_search: {argument} must be between 0 and" in str(raised.value)
    largest = 1000000 if argument == "rrf_k" else 1e9  # the largest value allowed
    found = db.execute(
        f"select count(*) from hybrid_search('sales', 3, {argument} => %s)", [largest]
    )
    assert found.fetchone()[0] == 2


@pytest.mark.parametrize(
    "rows, named",
    [
        ("('1', 'sales'), ('2', null)", "no query text (id 2)"),
        ("('1', 'sales'), ('2', '  ')", "no query text (id 2)"),
        ("('1', 'sales'), (null, 'team')", "a NULL id"),
    ],
)
def test_a_query_table_row_without_a_query_is_named(db, rows, named):
    insert(db, "quarterly sales", "the sales team")
    db.execute("create temp table questions (id text, query text)")
    db.execute("create temp table judged (query_id text, doc_id bigint, relevance int)")
    try:
        db.execute(f"insert into questions values {rows}")
        db.execute("insert into judged values ('1', 1, 1)")
        with pytest.raises(psycopg.errors.NullValueNotAllowed) as raised:
            db.execute("select * from hybrid_search_evaluate('questions', 'judged', 3)")
        assert raised.value.diag.message_primary == (
            f"hybrid_search_evaluate: queries table questions has a row with {named}"
        )
    finally:
        db.execute("drop table questions, judged")
