"""The BM25 keyword leg (keyword_search: an index scan of documents_fts_bm25_idx)
against a BM25 computed here from documents.fts, and against keyword_search_scan
(every document scored with the index's statistics)."""

import json

import psycopg
import pytest
from helpers import bm25, insert, nested_plans, terms

TEXTS = [
    "CREATE INDEX CONCURRENTLY builds an index without blocking writes",
    "A B-tree index supports equality and range queries on an index key",
    "GIN indexes store posting lists for full-text search and jsonb",
    "ALTER TABLE takes a lock that blocks reads and writes, a lock held to commit",
    "VACUUM reclaims space held by dead tuples",
    "A streaming replica replays WAL and serves read-only queries",
    "unique_violation 23505 is raised for a duplicate key in a unique index",
    "Reciprocal rank fusion adds one over sixty plus rank from every list",
    "Row-level security policies restrict the rows a role can see",
    "Index scans read the index, then the table; an index-only scan skips the table",
    "To be or not to be",  # stop words only: no lexeme, length 0, still a document
]


def search(conn, query, k=10, fn="keyword_search", **kwargs):
    args = "".join(f", {name} => %({name})s" for name in kwargs)
    return [
        (i, s)
        for i, _, s in conn.execute(
            f"select id, rank, score from {fn}(%(q)s, %(k)s{args})", {"q": query, "k": k, **kwargs}
        )
    ]


def assert_ranking(got, expected, k=10):
    expected = expected[:k]
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, score), (_, want) in zip(got, expected, strict=True):
        assert score == pytest.approx(want, rel=1e-9)


def statistics(conn, query) -> dict:
    """What to_bm25query read from the index: documents, avgdl, and df per lexeme."""
    text = conn.execute(
        "select to_bm25query('documents_fts_bm25_idx', %s)::text", [query]
    ).fetchone()[0]
    return json.loads(text)


@pytest.fixture
def corpus(db):
    # no VACUUM needed: the embedding UPDATE's dead first versions carry no fts
    insert(db, *TEXTS)
    return db


QUERIES = ["index scan without blocking", "lock writes", "the rows of a table", "index index"]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_index_is_exact_bm25(corpus, query, k):
    assert_ranking(search(corpus, query, k), bm25(corpus, query), k)
    assert_ranking(search(corpus, query, k, fn="keyword_search_scan"), bm25(corpus, query), k)


def test_keyword_search_is_an_index_scan(corpus):
    # a few rows: a sequential scan would be cheaper
    with nested_plans(corpus, ("enable_seqscan", "off")) as plans:
        search(corpus, "index lock")
    assert any("Index Scan using documents_fts_bm25_idx" in p for p in plans), "\n\n".join(plans)


def test_k1_and_b_are_configurable(corpus):
    corpus.execute("select hybrid_search_configure(bm25_k1 => 2.0, bm25_b => 0.3)")
    expected = bm25(corpus, "index table", k1=2.0, b=0.3)
    assert expected != bm25(corpus, "index table")
    assert_ranking(search(corpus, "index table"), expected)
    assert_ranking(search(corpus, "index table", fn="keyword_search_scan"), expected)
    with pytest.raises(psycopg.errors.CheckViolation):
        corpus.execute("select hybrid_search_configure(bm25_b => 1.5)")


def test_writes_are_found_at_once_and_dead_rows_count_until_vacuum(corpus):
    before = terms(corpus)
    (new_id,) = insert(corpus, "a brand new zebra index about zebra lock contention")
    corpus.execute("update documents set content = 'nothing about that anymore' where id = 1")
    corpus.execute("delete from documents where id = 2")
    # the index holds every version written since the last VACUUM: row 2, the old
    # version of row 1, the new row and the new row 1 (each written twice, by the
    # statement and by its embedding UPDATE, but with fts only the second time)
    now = terms(corpus)
    held = {**before, new_id: now[new_id], 1001: now[1]}
    stats = statistics(corpus, "zebra")
    assert stats["documents"] == len(held)
    assert stats["terms"][0]["df"] == 1
    for query in ["zebra", "index lock", "concurrently"]:
        got = search(corpus, query)
        expected = [(i, s) for i, s in bm25(corpus, query, stats_from=held) if i < 1000]
        assert_ranking(got, expected)
        assert_ranking(search(corpus, query, fn="keyword_search_scan"), expected)
        assert 2 not in [i for i, _ in got]
        assert 1 not in [i for i, _ in got]
    assert search(corpus, "zebra")[0][0] == new_id
    # VACUUM takes the dead rows out of the statistics
    corpus.execute("vacuum documents")
    assert statistics(corpus, "zebra")["documents"] == len(terms(corpus))
    assert_ranking(search(corpus, "index lock"), bm25(corpus, "index lock"))
    # hybrid_search_refresh() still runs and changes nothing here
    corpus.execute("select hybrid_search_refresh()")
    assert_ranking(search(corpus, "index lock"), bm25(corpus, "index lock"))


def test_metadata_filter_and_match(corpus):
    corpus.execute("update documents set metadata = '{\"even\": true}' where id % 2 = 0")
    corpus.execute("vacuum documents")
    expected = [(i, s) for i, s in bm25(corpus, "index table") if i % 2 == 0]
    assert_ranking(search(corpus, "index table", filter='{"even": true}'), expected)
    hits = search(corpus, "index", match='"unique index" -gin')
    assert [i for i, _ in hits] == [7]
    assert search(corpus, "index", match='"unique index" -duplicate') == []


def test_stop_words_and_unknown_words_find_nothing(corpus):
    assert search(corpus, "the and of") == []
    assert search(corpus, "xylophone") == []


def test_truncate_empties_the_keyword_index(corpus):
    assert statistics(corpus, "index")["documents"] == len(TEXTS)
    corpus.execute("truncate documents")
    assert statistics(corpus, "index")["documents"] == 0
    assert search(corpus, "index") == []


def test_a_search_role_and_row_level_security(corpus):
    corpus.execute("update documents set metadata = '{\"tenant\": 1}' where id % 3 = 0")
    corpus.execute("vacuum documents")  # the index's statistics: one version per row
    corpus.execute("drop role if exists bm25_tenant")
    corpus.execute("create role bm25_tenant")
    corpus.execute("select hybrid_search_grant('bm25_tenant', 'search')")
    corpus.execute("alter table documents enable row level security")
    corpus.execute(
        "create policy bm25_tenant on documents to bm25_tenant"
        " using (metadata @> '{\"tenant\": 1}')"
    )
    try:
        # scored with the statistics of the rows the role sees
        visible = {i: t for i, t in terms(corpus).items() if i % 3 == 0}
        expected = [
            (i, s)
            for i, s in bm25(corpus, "index queries rows", stats_from=visible)
            if i in visible
        ]
        corpus.execute("set role bm25_tenant")
        got = search(corpus, "index queries rows", 3)
        assert len(got) == 3
        assert_ranking(got, expected, 3)
        # the index's statistics only if the owner shares them
        lexemes = "to_tsvector('english', 'index queries rows'), 1.2, 0.75"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="bm25_statistics"):
            corpus.execute(f"select _bm25query_shared({lexemes})")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            corpus.execute(f"select _bm25query('documents_fts_bm25_idx', {lexemes})")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            corpus.execute("select hybrid_search_configure(bm25_statistics => 'index')")
        corpus.execute("reset role")
        corpus.execute("select hybrid_search_configure(bm25_statistics => 'index')")
        shared = [(i, s) for i, s in bm25(corpus, "index queries rows") if i in visible]
        corpus.execute("set role bm25_tenant")
        got = search(corpus, "index queries rows", 3)
        assert len(got) == 3
        assert_ranking(got, shared, 3)
        assert [s for _, s in got] != [s for _, s in expected[:3]]  # other statistics
    finally:
        corpus.execute("reset role")
        corpus.execute("update hybrid_search_config set bm25_statistics = null")
        corpus.execute("drop policy bm25_tenant on documents")
        corpus.execute("alter table documents disable row level security")
        corpus.execute("select hybrid_search_revoke('bm25_tenant')")
        corpus.execute("revoke all on schema public from bm25_tenant")
        corpus.execute("drop role bm25_tenant")
    # a role without SELECT on documents cannot read the index's statistics
    corpus.execute("drop role if exists bm25_stranger")
    corpus.execute("create role bm25_stranger")
    corpus.execute("grant usage on schema public to bm25_stranger")
    corpus.execute(
        "grant execute on function keyword_search, _keyword_bm25query, _bm25query,"
        " _check_query_text, _check_search_arguments, _check_filter,"
        " _is_coordinator to bm25_stranger"
    )
    try:
        corpus.execute("set role bm25_stranger")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="documents"):
            search(corpus, "index")
    finally:
        corpus.execute("reset role")
        corpus.execute(
            "revoke all on function keyword_search, _keyword_bm25query, _bm25query,"
            " _check_query_text, _check_search_arguments, _check_filter,"
            " _is_coordinator from bm25_stranger"
        )
        corpus.execute("revoke all on schema public from bm25_stranger")
        corpus.execute("drop role bm25_stranger")
