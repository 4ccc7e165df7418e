"""Retrieval metrics in SQL against hand-computed values, and fusion measured by them."""

import math

import numpy as np
import psycopg
import pytest
from helpers import insert


def run_literal(rows) -> str:
    """An array of hybrid_search_run_row from (query, method, rank, doc) tuples."""
    items = ", ".join(f"row('{q}', '{m}', {r}, {d})::hybrid_search_run_row" for q, m, r, d in rows)
    return f"array[{items}]"


@pytest.fixture
def qrels(db):
    db.execute("drop table if exists judged")
    db.execute("create table judged (query_id text, doc_id bigint, relevance int)")
    db.execute(
        "insert into judged values ('q1', 1, 1), ('q1', 2, 1), ('q2', 3, 2), ('q2', 8, 0)"
        ", ('q3', 9, 0)"  # q3 has no relevant document: not a judged query
    )
    return db


RUN = [
    ("q1", "a", 1, 1),
    ("q1", "a", 2, 9),
    ("q1", "a", 3, 2),
    ("q2", "a", 1, 4),
    ("q2", "a", 2, 3),
    ("q1", "b", 1, 2),
]


def score(conn, rows, k):
    return {
        m: (n, nd, r, mrr)
        for m, n, nd, r, mrr in conn.execute(
            f"select * from hybrid_search_score_run({run_literal(rows)}, 'judged', %s)", [k]
        )
    }


def test_metrics_by_hand(qrels):
    got = score(qrels, RUN, 10)
    # q1: dcg 1 + 1/log2(4), idcg 1 + 1/log2(3); q2: dcg 2/log2(3), idcg 2
    q1 = (1 + 0.5) / (1 + 1 / math.log2(3))
    q2 = (2 / math.log2(3)) / 2
    assert got["a"] == pytest.approx((2, (q1 + q2) / 2, 1.0, (1 + 0.5) / 2))
    # b answered q1 only, with its second relevant document missing; q2 scores 0
    assert got["b"] == pytest.approx((2, (1 / (1 + 1 / math.log2(3))) / 2, 0.25, 0.5))


def test_only_the_queries_asked_count(qrels):
    rows = qrels.execute(
        f"select method, judged, ndcg from hybrid_search_score_run({run_literal(RUN)}, 'judged',"
        " query_ids => array['q2', 'q3'])"
    ).fetchall()
    assert rows == [("a", 1, pytest.approx(1 / math.log2(3))), ("b", 1, 0.0)]


def test_metrics_at_cutoff_one(qrels):
    got = score(qrels, RUN, 1)
    assert got["a"] == pytest.approx((2, 0.5, 0.25, 0.5))


def test_bad_qrels_get_clear_errors(qrels):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="k must be between"):
        qrels.execute(f"select * from hybrid_search_score_run({run_literal(RUN)}, 'judged', 0)")
    with pytest.raises(psycopg.errors.UndefinedTable):
        qrels.execute(f"select * from hybrid_search_score_run({run_literal(RUN)}, 'nope', 10)")
    qrels.execute("drop table if exists wrong")
    qrels.execute("create table wrong (a int)")
    needs = "it needs columns query_id, doc_id, relevance"
    with pytest.raises(
        psycopg.errors.UndefinedColumn,
        match=r"hybrid_search_score_run: qrels table public\.wrong has no column query_id, doc_id,"
        f" relevance; {needs}",
    ):
        qrels.execute(f"select * from hybrid_search_score_run({run_literal(RUN)}, 'wrong', 10)")


def test_evaluate_names_the_table_argument_without_its_columns(qrels):
    """Not the internal query's "column q.id does not exist": the argument and what it needs."""
    qrels.execute("drop table if exists questions")
    qrels.execute("create table questions (query_id text, query text)")
    with pytest.raises(
        psycopg.errors.UndefinedColumn,
        match=r"hybrid_search_evaluate: queries table public\.questions has no column id;"
        " it needs columns id, query",
    ):
        qrels.execute("select * from hybrid_search_evaluate('questions', 'judged')")
    qrels.execute("drop table if exists asked")
    qrels.execute("create table asked (id text, query text)")
    with pytest.raises(
        psycopg.errors.UndefinedColumn,
        match=r"hybrid_search_evaluate: qrels table public\.asked has no column query_id, doc_id,"
        " relevance; it needs columns query_id, doc_id, relevance",
    ):
        qrels.execute("select * from hybrid_search_evaluate('asked', 'asked')")


def test_fusion_beats_each_leg_when_they_find_different_halves(qrels):
    """The keyword leg finds documents that say 'zebra', the dense leg those whose
    vectors point along the query's; each half of the answers is found by one leg."""
    dim = qrels.execute("select dense_dimensions from hybrid_search_model_info()").fetchone()[0]
    axis = np.zeros(dim, np.float32)
    axis[0] = 1.0
    rng = np.random.default_rng(0)
    fillers = insert(qrels, *[f"filler document number {i} about nothing" for i in range(12)])
    for doc_id in fillers:  # far from the query direction
        v = rng.normal(size=dim).astype(np.float32)
        v[0] = -abs(v[0]) - 3
        qrels.execute(
            "update documents set dense = %s where id = %s", [v / np.linalg.norm(v), doc_id]
        )
    words = insert(qrels, "zebra stripes", "a zebra herd")
    for doc_id in words:  # opposite to the query direction: the dense leg ranks them last
        qrels.execute("update documents set dense = %s where id = %s", [-axis, doc_id])
    near = insert(qrels, "grazing animals on the savanna", "wild horses in Africa")
    for i, doc_id in enumerate(near):
        v = axis.copy()
        v[1 + i] = 0.1
        qrels.execute(
            "update documents set dense = %s where id = %s", [v / np.linalg.norm(v), doc_id]
        )
    qrels.execute("truncate judged")
    qrels.execute("insert into judged select 'q', unnest(%s::bigint[]), 1", [words + near])
    qrels.execute("select hybrid_search_refresh()")
    runs = []
    for method, sql in [
        ("keyword", "select id, rank from keyword_search('zebra', 4)"),
        ("dense", "select id, rank from dense_search(%(v)s, 4)"),
        (
            "rrf",
            "select id, row_number() over (order by score desc, id)"
            " from hybrid_search('zebra', %(v)s, null, 4)",
        ),
        (
            "weighted",
            "select id, row_number() over (order by score desc, id)"
            " from hybrid_search('zebra', %(v)s, null, 4, fusion => 'weighted')",
        ),
    ]:
        runs += [("q", method, r, d) for d, r in qrels.execute(sql, {"v": axis})]
    got = score(qrels, runs, 4)
    assert got["keyword"][2] == pytest.approx(0.5)
    assert got["dense"][2] == pytest.approx(0.5)
    for fusion in ("rrf", "weighted"):
        assert got[fusion][2] == pytest.approx(1.0)
        assert got[fusion][1] > max(got["keyword"][1], got["dense"][1])


def test_evaluate_reports_every_leg_and_fusion(qrels):
    ids = insert(qrels, "vacuum reclaims dead tuples", "an index speeds up reads", "vacuum full")
    qrels.execute("select hybrid_search_refresh()")
    qrels.execute("drop table if exists questions")
    qrels.execute("create table questions (id text, query text)")
    qrels.execute("insert into questions values ('v', 'vacuum'), ('i', 'index reads')")
    qrels.execute("truncate judged")
    qrels.execute(
        "insert into judged values ('v', %s, 1), ('v', %s, 1), ('i', %s, 1)",
        [ids[0], ids[2], ids[1]],
    )
    rows = {
        r[0]: r[1:]
        for r in qrels.execute("select * from hybrid_search_evaluate('questions', 'judged', 5)")
    }
    assert set(rows) == {
        "dense",
        "sparse",
        "keyword",
        "hybrid rrf",
        "hybrid weighted",
        "hybrid raw",
    }
    assert all(r[0] == 2 for r in rows.values())
    # the keyword leg finds every answer, and each query's first result is relevant
    assert rows["keyword"][1:] == pytest.approx((1.0, 1.0, 1.0))
