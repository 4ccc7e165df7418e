"""The three legs and their fusion, against references computed in Python."""

import contextlib
import json
import time

import numpy as np
import psycopg
import pytest
from helpers import (
    insert,
    model_calls,
    nested_plans,
    parse_sparse,
    tenant_policy,
    toast_blocks_read,
)
from psycopg.types.json import Jsonb

CORPUS = [
    ("CREATE INDEX CONCURRENTLY builds an index without blocking writes", {"topic": "indexes"}),
    ("A B-tree index supports equality and range queries", {"topic": "indexes"}),
    ("GIN indexes store posting lists for full-text search and jsonb", {"topic": "indexes"}),
    ("ALTER TABLE takes an ACCESS EXCLUSIVE lock that blocks reads and writes", {"topic": "locks"}),
    ("Ticket 4411: clients log ERR_CONN_REFUSED when the pooler restarts", {"topic": "support"}),
    ("Ticket 5120: part SKU-A87-XYZ was shipped twice", {"topic": "support"}),
    ("pg_stat_statements tracks execution statistics of statements", {"topic": "monitoring"}),
    ("VACUUM reclaims space held by dead tuples", {"topic": "maintenance"}),
    ("A streaming replica replays WAL and serves read-only queries", {"topic": "replication"}),
    ("unique_violation 23505 is raised for a duplicate key in a unique index", {"topic": "errors"}),
    ("Reciprocal rank fusion adds one over sixty plus rank from every list", {"topic": "search"}),
    ("Row-level security policies restrict the rows a role can see", {"topic": "security"}),
]


@pytest.fixture
def corpus(db):
    ids = {}
    for content, metadata in CORPUS:
        (ids[content],) = insert(db, content, metadata=metadata)
    return db


def hybrid(conn, query, k=10, **kwargs):
    args = ", ".join(f"{name} => %({name})s" for name in kwargs)
    sql = f"select * from hybrid_search(%(query)s, %(k)s{', ' + args if args else ''})"
    return conn.execute(sql, {"query": query, "k": k, **kwargs}).fetchall()


def leg(conn, name, query, k):
    return conn.execute(f"select id, rank, score from {name}(%s, %s)", [query, k]).fetchall()


@pytest.mark.parametrize(
    "query, needle", [("ERR_CONN_REFUSED", "ERR_CONN_REFUSED"), ("SKU-A87-XYZ", "SKU-A87-XYZ")]
)
def test_rare_identifier_ranks_first(corpus, query, needle):
    top = hybrid(corpus, query, 5)[0]
    assert needle in top[1]
    assert top[8] == 1  # keyword leg
    assert top[6] == 1  # sparse leg


def test_dense_leg_is_exact_cosine_ranking(corpus):
    query = "index without blocking"
    q = corpus.execute("select embed_dense(%s)", [query]).fetchone()[0].to_numpy()
    docs = [(i, d.to_numpy()) for i, d in corpus.execute("select id, dense from documents")]
    sims = sorted(
        ((float(np.dot(q, d) / np.linalg.norm(q) / np.linalg.norm(d)), i) for i, d in docs),
        key=lambda t: (-t[0], t[1]),
    )
    got = leg(corpus, "dense_search", query, 5)
    assert [r[0] for r in got] == [i for _, i in sims[:5]]
    assert [r[1] for r in got] == [1, 2, 3, 4, 5]
    for (_, _, score), (sim, _) in zip(got, sims, strict=False):
        assert score == pytest.approx(sim, abs=1e-5)


def test_sparse_leg_is_exact_lexical_ranking(corpus):
    query = "index lock writes"
    q = parse_sparse(corpus.execute("select embed_sparse(%s)::text", [query]).fetchone()[0])
    docs = corpus.execute("select id, sparse::text from documents").fetchall()
    scores = []
    for doc_id, text in docs:
        d = parse_sparse(text)
        score = sum(w * d[t] for t, w in q.items() if t in d)
        if score > 0:
            scores.append((score, doc_id))
    scores.sort(key=lambda t: (-t[0], t[1]))
    got = leg(corpus, "sparse_search", query, 100)
    assert [r[0] for r in got] == [i for _, i in scores]
    for (_, _, score), (expected, _) in zip(got, scores, strict=True):
        assert score == pytest.approx(expected, rel=1e-5)


def test_keyword_leg_filters_with_websearch_syntax(corpus):
    ids = corpus.execute(
        "select id from keyword_search('unique index', 10, match => '\"unique index\" -duplicate')"
    ).fetchall()
    assert ids == []  # the only unique-index document mentions "duplicate"
    hits = corpus.execute(
        "select d.content from keyword_search('index', match => 'index -gin') k"
        " join documents d using (id)"
    ).fetchall()
    assert len(hits) == 3 and all("GIN" not in c for (c,) in hits)
    assert leg(corpus, "keyword_search", "the and of", 10) == []  # stop words only


def rrf_reference(legs, weights, rrf_k, k):
    scores = {}
    for rows, weight in zip(legs, weights, strict=True):
        if weight == 0:  # a leg with weight 0 is not run at all
            continue
        for doc_id, rank, _ in rows:
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:k]


def weighted_reference(legs, weights, k):
    scores = {}
    for rows, weight in zip(legs, weights, strict=True):
        if not rows or weight == 0:
            continue
        values = [s for _, _, s in rows]
        low, high = min(values), max(values)
        for doc_id, _, s in rows:
            norm = 1.0 if high == low else (s - low) / (high - low)
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * norm
    total = sum(weights)
    fused = {i: s / total for i, s in scores.items()}
    return sorted(fused.items(), key=lambda t: (-t[1], t[0]))[:k]


def legs_for(conn, query, candidates):
    return [
        leg(conn, name, query, candidates)
        for name in ("dense_search", "sparse_search", "keyword_search")
    ]


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.0), (0.0, 1.0, 3.0)])
@pytest.mark.parametrize("rrf_k", [60, 1])
@pytest.mark.parametrize("k, candidates", [(8, 6), (3, 6)])
def test_rrf_equals_python_reference(corpus, weights, rrf_k, k, candidates):
    query = "index blocking writes"
    # each leg is asked for greatest(candidates, k) documents
    expected = rrf_reference(legs_for(corpus, query, max(candidates, k)), weights, rrf_k, k)
    got = hybrid(
        corpus, query, k, fusion="rrf", candidates=candidates, rrf_k=rrf_k,
        dense_weight=weights[0], sparse_weight=weights[1], keyword_weight=weights[2],
    )  # fmt: skip
    assert_fused_as(got, expected)


def hybrid_weighted(conn, query, k, fusion, candidates, weights):
    """hybrid_search with (dense, sparse, keyword) weights, or each fusion's default weights
    for None."""
    kwargs = {"fusion": fusion, "candidates": candidates}
    if weights:
        kwargs |= dict(
            zip(("dense_weight", "sparse_weight", "keyword_weight"), weights, strict=True)
        )
    return hybrid(conn, query, k, **kwargs)


def assert_fused_as(got, expected):
    """hybrid_search's rows are the reference's (id, fused score) pairs, in order."""
    assert [r[0] for r in got] == [i for i, _ in expected]
    assert [r[3] for r in got] == pytest.approx([s for _, s in expected])


@pytest.mark.parametrize("weights", [None, (0.4, 0.2, 0.2), (1.0, 0.0, 1.0)])
def test_weighted_fusion_equals_python_reference(corpus, weights):
    query, candidates = "unique index duplicate key", 5
    expected = weighted_reference(
        legs_for(corpus, query, max(candidates, 8)), weights or (0.4, 0.2, 0.2), 8
    )
    got = hybrid_weighted(corpus, query, 8, "weighted", candidates, weights)
    assert_fused_as(got, expected)


@pytest.mark.parametrize("weights", [None, (1.0, 0.5, 0.1)])
def test_raw_fusion_equals_python_reference(corpus, weights):
    query, candidates = "unique index duplicate key", 5
    legs = legs_for(corpus, query, 8)
    scores = {}
    for rows, weight in zip(legs, weights or (0.4, 0.2, 0.0), strict=True):
        for doc_id, _, score in rows if weight else []:
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * score
    expected = sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:8]
    got = hybrid_weighted(corpus, query, 8, "raw", candidates, weights)
    assert_fused_as(got, expected)
    assert all(r[8] is None for r in got) == (weights is None)  # keyword weight 0 by default


def test_each_leg_rank_and_score_are_reported(corpus):
    query = "index"
    dense, sparse, keyword = (
        {i: (r, s) for i, r, s in rows} for rows in legs_for(corpus, query, 100)
    )
    for row in hybrid(corpus, query, 10):
        doc_id = row[0]
        assert (row[4], row[5]) == dense.get(doc_id, (None, None))
        assert (row[6], row[7]) == sparse.get(doc_id, (None, None))
        assert (row[8], row[9]) == keyword.get(doc_id, (None, None))


def test_filter_restricts_every_leg(corpus):
    flt = {"topic": "indexes"}
    allowed = {
        r[0]
        for r in corpus.execute(
            "select id from documents where metadata @> %s::jsonb", [json.dumps(flt)]
        ).fetchall()
    }
    for name in ("dense_search", "sparse_search", "keyword_search"):
        rows = corpus.execute(
            f"select id from {name}('index', 10, filter => %s::jsonb)", [json.dumps(flt)]
        ).fetchall()
        assert rows and {r[0] for r in rows} <= allowed, name
    rows = hybrid(corpus, "index", 10, filter=json.dumps(flt))
    assert {r[0] for r in rows} == allowed  # k results whenever k matching documents exist


def test_results_are_stable_across_calls_and_connections(corpus, dsn):
    first = hybrid(corpus, "replica statistics", 10)
    assert hybrid(corpus, "replica statistics", 10) == first
    from helpers import connect

    with connect(dsn) as other:
        assert hybrid(other, "replica statistics", 10) == first


def test_vector_overload_equals_text_search(corpus):
    query = "vacuum dead tuples"
    by_text = hybrid(corpus, query, 5)
    by_vectors = corpus.execute(
        "select h.* from embed(%s) e, hybrid_search(%s, e.dense, e.sparse, 5) h", [query, query]
    ).fetchall()
    assert by_vectors == by_text
    only_dense = corpus.execute(
        "select id, sparse_rank, keyword_rank from hybrid_search(null, embed_dense(%s), null, 5)",
        [query],
    ).fetchall()
    assert len(only_dense) == 5 and all(r[1] is None and r[2] is None for r in only_dense)


@pytest.mark.parametrize(
    "call, message",
    [
        ("hybrid_search(null, 10)", "query must be a non-empty text"),
        ("hybrid_search('   ', 10)", "query must be a non-empty text"),
        ("hybrid_search('x', 0)", "k must be between 1 and 10000"),
        ("hybrid_search('x', -5)", "k must be between 1 and 10000"),
        ("hybrid_search('x', 1000000)", "k must be between 1 and 10000"),
        ("hybrid_search('x', null)", "k must be between 1 and 10000"),
        ("hybrid_search('x', 10, fusion => 'borda')", "unknown fusion 'borda'"),
        ("hybrid_search('x', 10, fusion => null)", "unknown fusion NULL"),
        ("hybrid_search('x', 10, dense_weight => -1)", "dense_weight must be between 0 and 1e9"),
        ("hybrid_search('x', 10, sparse_weight => 'NaN')", "sparse_weight must be between 0 and"),
        (
            "hybrid_search('x', 10, dense_weight => 0, sparse_weight => 0, keyword_weight => 0)",
            "nothing to search",
        ),
        ("hybrid_search('x', 10, candidates => 0)", "candidates must be between 1 and 10000"),
        ("hybrid_search('x', 10, rrf_k => -1)", "rrf_k must be between 0 and 1000000"),
        ("hybrid_search('x', 10, filter => '[1]')", "filter must be a JSON object"),
        ("dense_search('', 10)", "query must be a non-empty text"),
        ("sparse_search('x', 0)", "k must be between 1 and 10000"),
        ("keyword_search(null)", "query must be a non-empty text"),
        ("dense_search(null::vector, 10)", "query vector must not be NULL"),
        ("dense_search('x', 10, ef_search => 0)", "ef_search must be between 1 and 1000"),
        (
            "hybrid_search_create_dense_index('diskann')",
            "method must be graph, hnsw, hnsw_halfvec, ivfflat or none",
        ),
        ("hybrid_search_create_dense_index('hnsw', m => null)", "must not be NULL"),
    ],
)
def test_bad_arguments_get_clear_errors(corpus, call, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        corpus.execute(f"select * from {call}")


def test_bad_options_are_refused_before_the_query_is_embedded(corpus):
    """hybrid_search(text) checks every option (_hybrid_search_plan) before the model
    runs, so a bad call costs no forward pass."""
    calls = model_calls(corpus)
    for n, option in enumerate(["fusion => 'borda'", "candidates => 0", "colbert_rerank => -1"]):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            corpus.execute(f"select * from hybrid_search('never embedded {n}', 10, {option})")
    assert model_calls(corpus) == calls
    hybrid(corpus, "embedded once")
    assert model_calls(corpus) == calls + 1  # the counter counts


def test_k_larger_than_corpus_returns_everything_matching(corpus):
    rows = hybrid(corpus, "index", 500)
    assert len(rows) == len(CORPUS)  # the dense leg reaches every document
    assert [r[3] for r in rows] == sorted((r[3] for r in rows), reverse=True)


@pytest.mark.parametrize("method", ["hnsw", "hnsw_halfvec", "ivfflat", "none"])
def test_dense_index_methods_give_the_exact_ranking_here(corpus, method):
    query = "index without blocking"
    expected = corpus.execute(
        "select id, 1 - (dense <=> embed_dense(%s)) from documents order by 2 desc, id limit 5",
        [query],
    ).fetchall()
    try:
        corpus.execute("select hybrid_search_create_dense_index(%s, lists => 1)", [method])
        scans = "select coalesce(sum(idx_scan), 0) from pg_stat_user_indexes"
        scans += " where indexrelname = 'documents_dense_idx'"
        before = corpus.execute(scans).fetchone()[0]
        got = leg(corpus, "dense_search", query, 5)
        assert [r[0] for r in got] == [r[0] for r in expected]
        assert [r[2] for r in got] == pytest.approx([r[1] for r in expected], abs=1e-6)
        if method != "none":
            for _ in range(50):  # statistics reach the view asynchronously
                if corpus.execute(scans).fetchone()[0] > before:
                    break
                time.sleep(0.1)
            assert corpus.execute(scans).fetchone()[0] > before
    finally:
        corpus.execute("select hybrid_search_create_dense_index()")


def test_search_statements_are_not_jit_compiled(corpus):
    """With sequential scans off, a leg the dense index cannot serve (a halfvec index, a
    row-level-security policy) costs over jit_above_cost; JIT-compiling the fusion
    statement took 0.7 s a call. Forced on here, JIT compiles the outer statement only."""
    if not corpus.execute("select pg_jit_available()").fetchone()[0]:
        pytest.skip("this server has no JIT provider")
    corpus.execute("select hybrid_search_create_dense_index('hnsw_halfvec')")
    jit = [("auto_explain.log_analyze", "on"), ("jit", "on"), ("jit_above_cost", "0")]
    try:
        with nested_plans(corpus, *jit) as plans:
            hybrid(corpus, "index without blocking", 5)
            leg(corpus, "dense_search", "index without blocking", 5)
    finally:
        corpus.execute("select hybrid_search_create_dense_index()")
    nested = [p for p in plans if "with shard_legs" in p or "order by d.dense" in p]
    assert len(nested) >= 2, plans
    assert not [p for p in nested if "JIT:" in p]
    assert [p for p in plans if "from hybrid_search(" in p and "JIT:" in p]


FILTER_INDEXES = [
    "documents_dense_topic_indexes_idx",
    "documents_sparse_topic_indexes_idx",
    "documents_fts_bm25_topic_indexes_idx",
]


def searches(conn, query, flt):
    """Every search function's rows for query under filter flt (HNSW's ef_search at its
    most: over these few rows, exact)."""
    found = {
        name: conn.execute(
            f"select id, rank, score from {name}(%s, 10, filter => %s::jsonb{extra})",
            [query, flt],
        ).fetchall()
        for name, extra in [
            ("dense_search", ", ef_search => 1000"),
            ("sparse_search", ""),
            ("keyword_search", ""),
        ]
    }
    found["hybrid_search"] = hybrid(conn, query, 10, filter=flt, ef_search=1000)
    return found


def insert_filter_rows(conn, metadata, other_metadata):
    """400 rows of metadata and 1,600 of other_metadata: enough that an index scan beats
    reading and sorting the filter's rows, and that a filter's copies are smaller than
    the indexes. Varied: HNSW graphs of near-duplicates lose nodes."""
    words = " ".join(content for content, _ in CORPUS).split()
    rng = np.random.default_rng(5)

    def texts(n):
        return [" ".join(rng.choice(words, 8)) for _ in range(n)]

    insert(conn, *texts(400), metadata=metadata)
    insert(conn, *texts(1600), metadata=other_metadata)
    conn.execute("analyze documents")


@pytest.mark.parametrize("method", ["graph", "hnsw", "hnsw_halfvec"])
def test_a_filters_own_indexes_serve_its_searches(corpus, method):
    """hybrid_search_create_filter_indexes: copies of the three search indexes holding
    the filter's rows only. Searches with that filter scan them and return what the full
    indexes return, new rows enter them, other filters leave them alone, a restore
    re-creates them, and they are dropped by name."""
    flt, other = json.dumps({"topic": "indexes"}), json.dumps({"topic": "locks"})
    insert_filter_rows(corpus, {"topic": "indexes"}, {"topic": "other"})
    corpus.execute("select hybrid_search_create_dense_index(%s)", [method])
    # at 2,000 rows dense_flat, scoring the filter's 400, costs less than the copy's graph
    corpus.execute("drop index if exists documents_dense_filter_idx")
    try:
        expected = searches(corpus, "index", flt)
        created = corpus.execute(
            "select * from hybrid_search_create_filter_indexes('topic_indexes', %s)", [flt]
        ).fetchall()
        assert [r[0] for r in created] == FILTER_INDEXES
        with nested_plans(corpus) as plans:
            assert searches(corpus, "index", flt) == expected
        for name in FILTER_INDEXES:
            assert [p for p in plans if f"Index Scan using {name} " in p], name
        with nested_plans(corpus) as plans:
            searches(corpus, "index", other)
        assert not [p for p in plans if "topic_indexes_idx" in p]
        # a new row of the filter is found through its indexes
        (new,) = insert(corpus, "an index built without blocking", metadata={"topic": "indexes"})
        for name, rows in searches(corpus, "index without blocking", flt).items():
            assert new in [r[0] for r in rows], name
        remembered = "\n".join(
            r[0] for r in corpus.execute("select statement from hybrid_search_documents_ddl")
        )
        for name in FILTER_INDEXES:
            assert f"CREATE INDEX {name} ON" in remembered
        assert """WHERE (metadata @> '{"topic": "indexes"}'::jsonb)""" in remembered
        dropped = corpus.execute("select * from hybrid_search_drop_filter_indexes('topic_indexes')")
        assert [r[0] for r in dropped] == FILTER_INDEXES
        assert not corpus.execute(
            "select * from hybrid_search_drop_filter_indexes('topic_indexes')"
        ).fetchall()
    finally:
        corpus.execute("select hybrid_search_drop_filter_indexes('topic_indexes')")
        corpus.execute("select hybrid_search_create_dense_index()")


def test_a_role_whose_policy_is_the_filter_scans_its_own_indexes(corpus):
    """A row-level-security policy metadata @> (a constant) for a role implies the
    copies' predicate: every leg of that role scans them, with the rows and scores it
    gets without them (the BM25 leg with its visible rows' statistics)."""
    flt = {"tenant": "fi_reader"}
    insert_filter_rows(corpus, flt, {"tenant": "someone else"})
    with tenant_policy(corpus, ["fi_reader"]):
        corpus.execute(
            "create policy fi_reader_rows on documents as restrictive to fi_reader"
            f" using (metadata @> '{json.dumps(flt)}'::jsonb)"
        )
        try:
            corpus.execute("set role fi_reader")
            expected = searches(corpus, "index", None)
            corpus.execute("reset role")
            corpus.execute(
                "select * from hybrid_search_create_filter_indexes('fi', %s)", [json.dumps(flt)]
            )
            with nested_plans(corpus) as plans:
                corpus.execute("set role fi_reader")
                assert searches(corpus, "index", None) == expected
                corpus.execute("reset role")
            for name in ["documents_dense_fi_idx", "documents_sparse_fi_idx",
                         "documents_fts_bm25_fi_idx"]:  # fmt: skip
                assert [p for p in plans if f"Index Scan using {name} " in p], name
        finally:
            corpus.execute("reset role")
            corpus.execute("select hybrid_search_drop_filter_indexes('fi')")
            corpus.execute("drop policy fi_reader_rows on documents")


@contextlib.contextmanager
def policy_reader(corpus, policy):
    """The role fi_policy_reader under row-level security with policy as its only one,
    over 400 rows of its tenant among 2,000; yields statistics(sql), the role's
    bm25query of 'index query' by sql (parameters q and c, the text search config) as
    JSON, or None. All taken back afterwards."""
    insert_filter_rows(corpus, {"tenant": "fi_policy_reader"}, {"tenant": "someone else"})
    corpus.execute("drop role if exists fi_policy_reader")
    corpus.execute("create role fi_policy_reader")
    corpus.execute("select hybrid_search_grant('fi_policy_reader')")
    corpus.execute("alter table documents enable row level security")
    corpus.execute(
        f"create policy fi_policy_rows on documents to fi_policy_reader using ({policy})"
    )
    config = corpus.execute("select text_search_config from hybrid_search_settings").fetchone()[0]

    def statistics(sql):
        corpus.execute("set role fi_policy_reader")
        try:
            row = corpus.execute(sql, {"q": "index query", "c": config}).fetchone()
            return row[0] and json.loads(row[0])
        finally:
            corpus.execute("reset role")

    try:
        yield statistics
    finally:
        corpus.execute("reset role")
        corpus.execute("drop policy fi_policy_rows on documents")
        corpus.execute("alter table documents disable row level security")
        corpus.execute("select hybrid_search_revoke('fi_policy_reader')")
        corpus.execute("drop owned by fi_policy_reader")
        corpus.execute("drop role fi_policy_reader")


KEYWORD_BM25QUERY = "select _keyword_bm25query('t', %(q)s, %(c)s::regconfig)::text"
ROWS_BM25QUERY = (
    "select _bm25query_rows(to_tsvector(%(c)s::regconfig, %(q)s), 1.2, 0.75, null)::text"
)


def assert_a_deleted_row_counts_until_vacuum(corpus, statistics):
    """After a delete of one of the role's 400 rows, its BM25 statistics (an index's
    count) still count it, the pass over its rows does not; after VACUUM neither does."""
    corpus.execute(
        "delete from documents where id = (select min(id) from documents"
        ' where metadata @> \'{"tenant": "fi_policy_reader"}\')'
    )
    assert statistics(KEYWORD_BM25QUERY)["documents"] == 400
    assert statistics(ROWS_BM25QUERY)["documents"] == 399
    corpus.execute("vacuum documents")
    assert statistics(KEYWORD_BM25QUERY)["documents"] == 399


@pytest.mark.parametrize(
    "policy",
    [
        """metadata @> '{"tenant": "fi_policy_reader"}'::jsonb""",
        "metadata @> jsonb_build_object('tenant', current_user)",  # every tenant's policy
    ],
)
def test_a_role_whose_policy_is_a_filter_gets_its_copys_bm25_statistics(corpus, policy):
    """A role whose only row-level-security policy is metadata @> a filter with its own
    indexes (a constant, or one per role: current_user is evaluated for the proof) gets
    the BM25 statistics of the filter's copy of the BM25 index, read from the copy
    (_bm25_policy_index), not counted over its rows at each query: the same statistics,
    rows and scores while none of its rows is deleted, and a deleted row counted until
    VACUUM, as the index counts it."""
    flt = json.dumps({"tenant": "fi_policy_reader"})
    with policy_reader(corpus, policy) as statistics:
        corpus.execute("set role fi_policy_reader")
        expected = searches(corpus, "index", None)
        corpus.execute("reset role")
        before = statistics(KEYWORD_BM25QUERY)
        assert before["documents"] == 400
        corpus.execute("select * from hybrid_search_create_filter_indexes('fip', %s)", [flt])
        try:
            assert corpus.execute(
                "select _bm25_policy_index('documents_fts_bm25_idx')::text"
            ).fetchone() == (None,)  # the owner is not under row-level security
            corpus.execute("set role fi_policy_reader")
            assert corpus.execute(
                "select _bm25_policy_index('documents_fts_bm25_idx')::text"
            ).fetchone() == ("documents_fts_bm25_fip_idx",)
            assert searches(corpus, "index", None) == expected
            corpus.execute("reset role")
            assert statistics(KEYWORD_BM25QUERY) == before
            assert_a_deleted_row_counts_until_vacuum(corpus, statistics)  # in the copy
        finally:
            corpus.execute("reset role")
            corpus.execute("select hybrid_search_drop_filter_indexes('fip')")


@pytest.mark.parametrize(
    "policy",
    [
        "metadata->>'tenant' = current_user",  # the README's policy: text = name
        "(metadata->>'tenant') = 'fi_policy_reader'",
    ],
)
def test_a_role_whose_policy_a_btree_serves_gets_its_bm25_statistics_from_the_index(corpus, policy):
    """A role whose policy is one condition on an expression a btree indexes gets the BM25
    statistics of its rows counted in the BM25 index over the TIDs that btree names
    (_bm25query_policy_rows), not over its rows in the table: the same statistics, rows
    and scores as the pass over its rows while none is deleted, and a deleted row
    counted until VACUUM, as the index counts it."""
    in_index = (
        "select _bm25query_policy_rows('documents_fts_bm25_idx',"
        " to_tsvector(%(c)s::regconfig, %(q)s), 1.2, 0.75)::text"
    )
    with policy_reader(corpus, policy) as statistics:
        corpus.execute("set role fi_policy_reader")
        expected = searches(corpus, "index", None)
        corpus.execute("reset role")
        before = statistics(ROWS_BM25QUERY)
        assert before["documents"] == 400
        assert statistics(in_index) is None  # no btree on the policy's expression yet
        corpus.execute("create index fi_tenant_idx on documents ((metadata->>'tenant'))")
        try:
            assert statistics(in_index) == before
            assert statistics(KEYWORD_BM25QUERY) == before
            corpus.execute("set role fi_policy_reader")
            assert searches(corpus, "index", None) == expected
            corpus.execute("reset role")
            assert_a_deleted_row_counts_until_vacuum(corpus, statistics)  # in the index
        finally:
            corpus.execute("reset role")
            corpus.execute("drop index fi_tenant_idx")


def test_filter_index_statements_build_the_copies_concurrently(corpus):
    """hybrid_search_filter_index_statements: the same copies with CREATE INDEX
    CONCURRENTLY, run one by one as psql's \\gexec does; run again, they drop the copies
    concurrently first. The event trigger remembers them, and hybrid_search_check()
    checks them."""
    flt = json.dumps({"topic": "indexes"})

    def statements():
        return [
            r[0]
            for r in corpus.execute(
                "select * from hybrid_search_filter_index_statements('topic_indexes', %s)", [flt]
            )
        ]

    try:
        first = statements()
        assert [s.split(" ON ")[0] for s in first] == [
            f"CREATE INDEX CONCURRENTLY {name}" for name in FILTER_INDEXES
        ]
        for statement in first:
            corpus.execute(statement)
        again = statements()
        assert [s for s in again if s.startswith("DROP INDEX CONCURRENTLY")] == [
            f"DROP INDEX CONCURRENTLY public.{name}" for name in FILTER_INDEXES
        ]
        for statement in again:
            corpus.execute(statement)
        valid = corpus.execute(
            "select c.relname from pg_index as i join pg_class as c on c.oid = i.indexrelid"
            " where i.indisvalid and c.relname like '%%topic_indexes%%' order by c.relname"
        ).fetchall()
        assert sorted(r[0] for r in valid) == sorted(FILTER_INDEXES)
        remembered = "\n".join(
            r[0] for r in corpus.execute("select statement from hybrid_search_documents_ddl")
        )
        assert all(f"CREATE INDEX {name} ON" in remembered for name in FILTER_INDEXES)
        # hybrid_search_check() checks each copy, and tells an interrupted build
        checks = {r[0]: r[1:] for r in corpus.execute("select * from hybrid_search_check()")}
        assert [checks[f"filter_index {name}"][0] for name in FILTER_INDEXES] == ["ok"] * 3
        corpus.execute(
            "update pg_index set indisvalid = false"
            f" where indexrelid = '{FILTER_INDEXES[0]}'::regclass"
        )
        checks = {r[0]: r[1:] for r in corpus.execute("select * from hybrid_search_check()")}
        status, detail = checks[f"filter_index {FILTER_INDEXES[0]}"]
        assert status == "error" and "invalid (an interrupted build)" in detail, detail
    finally:
        corpus.execute("select hybrid_search_drop_filter_indexes('topic_indexes')")


@pytest.mark.parametrize(
    "call, message",
    [
        ("hybrid_search_filter_index_statements('t3', '{\"t\": 3}', null)", "must not be NULL"),
        ("hybrid_search_create_filter_indexes('Tenant-3', '{\"t\": 3}')", "name must be 1 to 32"),
        ("hybrid_search_create_filter_indexes(null, '{\"t\": 3}')", "name must be 1 to 32"),
        ("hybrid_search_create_filter_indexes(repeat('a', 33), '{\"t\": 3}')", "name must be"),
        ("hybrid_search_create_filter_indexes('t3', null)", "non-empty JSON object"),
        ("hybrid_search_create_filter_indexes('t3', '{}')", "non-empty JSON object"),
        ("hybrid_search_create_filter_indexes('t3', '[3]')", "non-empty JSON object"),
        ("hybrid_search_drop_filter_indexes('x; drop table documents')", "name must be"),
    ],
)
def test_filter_indexes_refuse_bad_names_and_filters(corpus, call, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        corpus.execute(f"select * from {call}")
    assert not corpus.execute(
        "select from pg_indexes where indexname like 'documents%%t3%%'"
    ).fetchall()


def test_index_scans_are_counted_for_the_dba(corpus):
    """pg_stat_user_indexes.idx_scan is where a DBA looks for unused indexes: the
    sparse_inverted scans of the sparse and BM25 legs must count there."""
    scans = (
        "select indexrelname, idx_scan from pg_stat_user_indexes"
        " where indexrelname in ('documents_sparse_idx', 'documents_fts_bm25_idx')"
    )
    before = dict(corpus.execute(scans).fetchall())
    assert set(before) == {"documents_sparse_idx", "documents_fts_bm25_idx"}
    # once analyzed, a table this small is cheaper to read in full than through an index
    corpus.execute("set enable_seqscan to off")
    for _ in range(3):
        leg(corpus, "sparse_search", "index without blocking", 5)
        leg(corpus, "keyword_search", "index without blocking", 5)
    for _ in range(50):  # statistics reach the view asynchronously
        after = dict(corpus.execute(scans).fetchall())
        if all(after[name] >= before[name] + 3 for name in before):
            break
        time.sleep(0.1)
    assert all(after[name] >= before[name] + 3 for name in before), (before, after)


def test_searching_reads_no_toast(corpus):
    """A documents row that fits on a page stays whole in its heap tuple
    (toast_tuple_target): every leg scores its candidates and the results carry
    their content without a TOAST read, here with 2.6 kB of content that does
    not compress and its 3 kB of lexemes (which the default target of 2 kB would
    move out of line)."""
    rng = np.random.default_rng(7)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    words = ["".join(rng.choice(alphabet, 64)) for _ in range(40)]
    content = "VACUUM reclaims space " + " ".join(words)
    (doc,) = insert(corpus, content)
    before = toast_blocks_read(corpus, "documents")
    found = hybrid(corpus, "VACUUM reclaims space " + " ".join(words[:5]), 3)
    assert toast_blocks_read(corpus, "documents") == before
    assert (found[0][0], found[0][1]) == (doc, content)
    stored = corpus.execute("select pg_column_size(content) from documents where id = %s", [doc])
    assert stored.fetchone()[0] > 2600  # neither compressed nor out of line


SEARCH_SETTINGS = (
    "hybrid_search.sparse_batch_size",
    "plan_cache_mode",
    "hnsw.ef_search",
    "hnsw.iterative_scan",
    "enable_seqscan",
    "hybrid_search.sparse_positive_only",
    "hybrid_search.sparse_filter_after",
    "enable_bitmapscan",
)


def session_settings(conn):
    return [conn.execute("select current_setting(%s)", [s]).fetchone()[0] for s in SEARCH_SETTINGS]


def test_searching_leaves_the_sessions_settings_as_they_were(corpus):
    """Each search function sets what its statement needs (a first sparse batch sized
    for k; for dense_search and hybrid_search a generic plan when unfiltered and
    HNSW's settings) locally, where a change lasts until the transaction ends: in a
    transaction, every later statement sees the session's own values again."""
    query = "index without blocking writes"
    with corpus.transaction():
        corpus.execute("set local hybrid_search.sparse_batch_size = 150")
        before = session_settings(corpus)
        assert before[:2] == ["150", "auto"]
        for name in ("sparse_search", "keyword_search", "dense_search"):
            for filter_ in (None, '{"topic": "indexes"}'):
                rows = corpus.execute(
                    f"select id from {name}(%s, 1000, %s::jsonb)", [query, filter_]
                ).fetchall()
                assert rows, name
                assert session_settings(corpus) == before, (name, filter_)
        assert hybrid(corpus, query, 5, candidates=1000)
        assert session_settings(corpus) == before
        assert hybrid(corpus, query, 5, candidates=1000, filter=Jsonb({"topic": "indexes"}))
        assert session_settings(corpus) == before
