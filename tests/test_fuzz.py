"""Hostile input to every public SQL function: each call either works or fails
with a clean error (a data, syntax/access or limit SQLSTATE, never an internal
error or a crash), and the documents table is intact afterwards."""

import json
import random

import psycopg
import pytest
from helpers import insert

# SQLSTATE classes of a clean refusal: data exception, syntax error or access
# rule violation, program limit exceeded
CLEAN_CLASSES = {"22", "42", "54"}

rng = random.Random(20261121)


def junk(length: int) -> str:
    """Random code points without NUL or surrogates (the server's UTF-8 takes any other)."""
    return "".join(
        chr(c)
        for c in (rng.randrange(1, 0x10FFFF) for _ in range(length))
        if not 0xD800 <= c <= 0xDFFF
    )


TEXTS = [
    "'",
    "''; drop table documents; --",
    'x"; DROP TABLE documents; --',
    "\\",
    "%s %I $1 $$ $func$",
    '"unterminated phrase',
    "- OR OR -- !!! & | <-> :*",
    "\u202e\u200b\ufeff",
    "🐘" * 300,
    junk(200),
    junk(5000),
    "word " * 200_000,  # a megabyte: embedded from its first max_length tokens
    " \t\n ",
]
FILTERS = [
    json.dumps({"tenant": 'x"; DROP TABLE documents; --'}),
    json.dumps({junk(20): [junk(10), {"'": None}]}),
    "[]",
    '"a string"',
    "null",
    "42",
    '{"a": ' * 2000 + "1" + "}" * 2000,  # deep nesting
    '{"a": ' * 100_000 + "1" + "}" * 100_000,  # deeper than the parser allows
    json.dumps({f"k{i}": i for i in range(20_000)}),
    '{"k": "\\u0000"}',
    None,
]
INTEGERS = [-(2**31), -1, 0, 1, 10_000, 10_001, 2**31 - 1, 2**31, 2**63 - 1]
FLOATS = [float("nan"), float("inf"), float("-inf"), -0.0, -1.0, 1e308, 5e-324]


def cases():
    """(sql, params) of calls to every public function with hostile arguments."""
    for text in TEXTS:
        yield "select * from hybrid_search(%s, 5)", [text]
        yield "select * from dense_search(%s, 5)", [text]
        yield "select * from sparse_search(%s, 5)", [text]
        yield "select * from keyword_search(%s, 5)", [text]
        yield "select * from query_tokens(%s)", [text]
        yield "select * from sparse_explain(%s)", [text]
        yield "select embed(%s)", [text]
        yield "select * from hybrid_search('vacuum', 5, fusion => %s)", [text]
        yield "select * from keyword_search('vacuum', 5, text_search_config => %s)", [text]
        yield "select sparse_dot(%s::jsonb, '{}'::jsonb)", [json.dumps({text: 1})]
    for flt in FILTERS:
        for leg in ("hybrid_search", "dense_search", "sparse_search", "keyword_search"):
            yield f"select * from {leg}('vacuum', 5, filter => %s::jsonb)", [flt]
        yield "select sparse_dot(%s::jsonb, %s::jsonb)", [flt, flt]
    for k in INTEGERS:
        for leg in ("hybrid_search", "dense_search", "sparse_search", "keyword_search"):
            yield f"select * from {leg}('vacuum', %s)", [k]
        yield "select * from hybrid_search('vacuum', 5, candidates => %s)", [k]
        yield "select * from hybrid_search('vacuum', 5, rrf_k => %s)", [k]
        yield "select * from hybrid_search('vacuum', 5, ef_search => %s)", [k]
        yield "select * from keyword_search('vacuum', 5, max_matches => %s)", [k]
    for x in FLOATS:
        for weight in ("dense_weight", "sparse_weight", "keyword_weight"):
            for fusion in ("rrf", "weighted"):
                yield (
                    f"select * from hybrid_search('vacuum', 5, fusion => %s, {weight} => %s)",
                    [fusion, x],
                )
    dims = "(select atttypmod from pg_attribute where attrelid = 'documents'::regclass"
    vectors = [
        "array_fill('NaN'::real, array[{d}])::text::vector",
        "array_fill(1e38::real, array[{d}])::vector",
        "array_fill(0::real, array[{d}])::vector",
        "array_fill(1::real, array[3])::vector",
    ]
    for v in vectors:
        expr = v.format(d=f"{dims} and attname = 'dense')")
        yield f"select * from dense_search({expr}, 5)", []
        yield f"select * from hybrid_search('vacuum', {expr}, null, 5)", []
    sparse = [
        "'{{1:1e38,2:1e38}}/{d}'",
        "'{{}}/{d}'",
        "'{{1:-1,2:-5}}/{d}'",
        "'{{1:1}}/3'",
        "'{{2147483647:1}}/{d}'",
        "'{{1:NaN}}/{d}'",
    ]
    for s in sparse:
        expr = "format(" + s.replace("{d}", "%s") + f", {dims} and attname = 'sparse'))"
        expr = expr.replace("{{", "{").replace("}}", "}")
        yield f"select * from sparse_search({expr}::sparsevec, 5)", []
        yield f"select * from sparse_search_scan({expr}::sparsevec, 5)", []
        yield f"select * from hybrid_search('vacuum', null, {expr}::sparsevec, 5)", []
    yield "select count(*) from embed_batch(array_fill('word'::text, array[3000]))", []
    yield "select count(*) from embed_batch(array_fill(null::text, array[100000]))", []
    yield "select count(*) from embed_batch(%s)", [[junk(50) for _ in range(200)]]
    yield "select count(*) from embed_batch('{}'::text[])", []
    yield "select count(*) from embed_batch(array[[1,2],[3,4]]::text[])", []
    yield "select sparse_to_jsonb(embed_sparse(%s))", [junk(300)]
    yield "select hybrid_search_grant(%s, 'search')", ['x"; DROP TABLE documents; --']
    yield "select hybrid_search_grant('postgres', %s)", ["search'; drop table documents; --"]


def fingerprint(conn):
    return conn.execute(
        "select count(*), md5(string_agg(id || content || metadata::text || dense::text"
        " || sparse::text, '|' order by id)) from documents"
    ).fetchone()


def test_hostile_input_gets_clean_errors_and_breaks_nothing(db):
    insert(db, *[f"vacuum and index document {i}" for i in range(20)], metadata={"t": 1})
    db.execute("select hybrid_search_refresh()")
    before = fingerprint(db)
    unclean, worked, refused = [], 0, 0
    for statement, params in cases():
        try:
            db.execute(statement, params).fetchall()
            worked += 1
        except psycopg.errors.ProgrammingError as error:  # cannot adapt a value: not sent
            refused += 1
            assert error.sqlstate is None or error.sqlstate[:2] in CLEAN_CLASSES
        except psycopg.Error as error:
            refused += 1
            if (error.sqlstate or "")[:2] not in CLEAN_CLASSES:
                unclean.append((statement[:90], str(params)[:60], error.sqlstate, str(error)[:200]))
        assert db.execute("select 1").fetchone() == (1,)  # the backend survived
    assert unclean == []
    assert worked > 50 and refused > 50  # both outcomes were exercised
    assert fingerprint(db) == before
    assert {s for _, s, _ in db.execute("select * from hybrid_search_check()")} == {"ok"}


@pytest.mark.parametrize("depth", [10, 5000])
def test_nested_filter_matches_like_jsonb_containment(db, depth):
    nested = '{"a": ' * depth + "1" + "}" * depth
    insert(db, "deeply nested metadata about vacuum")
    db.execute("update documents set metadata = %s::jsonb", [nested])
    found = db.execute(
        "select count(*) from hybrid_search('vacuum', 5, filter => %s::jsonb)", [nested]
    ).fetchone()[0]
    assert found == 1
