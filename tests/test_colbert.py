"""ColBERT re-ranking (BGE-M3 only): MaxSim against FlagEmbedding's reference, the
re-ranked order, stored vectors following writes, and row-level security."""

import numpy as np
import psycopg
import pytest
from helpers import insert

CORPUS = [
    "CREATE INDEX CONCURRENTLY builds an index without blocking writes",
    "A B-tree index supports equality and range queries",
    "GIN indexes store posting lists for full-text search and jsonb",
    "ALTER TABLE takes an ACCESS EXCLUSIVE lock that blocks reads and writes",
    "VACUUM reclaims space held by dead tuples",
    "A streaming replica replays WAL and serves read-only queries",
    "unique_violation 23505 is raised for a duplicate key in a unique index",
    "Row-level security policies restrict the rows a role can see",
    "pg_stat_statements tracks execution statistics of statements",
    "Reciprocal rank fusion adds one over sixty plus rank from every list",
    "Checkpoints write dirty pages and bound crash recovery time",
    "Autovacuum workers prevent transaction id wraparound",
]
QUERIES = ["index without blocking writes", "dead tuples and vacuum", "replica queries"]
DIM = 32  # the tiny test model's hidden size (= its ColBERT dimension)


def reference_vectors(reference_model, texts):
    out = reference_model.encode(texts, return_dense=False, return_colbert_vecs=True)
    return out["colbert_vecs"]


def reference_scores(reference_model, query, contents):
    (q,) = reference_vectors(reference_model, [query])
    return [
        float(reference_model.colbert_score(q, p))
        for p in reference_vectors(reference_model, contents)
    ]


def decode(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f2").reshape(-1, DIM).astype(np.float32)


@pytest.fixture
def store(db):
    db.execute("select hybrid_search_configure(colbert_store => true)")
    yield db
    db.execute("select hybrid_search_configure(colbert_store => false)")


def contents_by_id(conn):
    return dict(conn.execute("select id, content from documents order by id").fetchall())


def rerank(conn, query, ids):
    return conn.execute(
        "select id, rank, score from colbert_rerank(%s, %s)", [query, ids]
    ).fetchall()


@pytest.mark.parametrize("stored", [True, False])
def test_maxsim_equals_flagembedding_colbert_score(db, reference_model, stored):
    if stored:
        db.execute("select hybrid_search_configure(colbert_store => true)")
    try:
        insert(db, *CORPUS)
        assert db.execute(
            "select count(*) filter (where colbert is not null) from documents"
        ).fetchone()[0] == (len(CORPUS) if stored else 0)
        docs = contents_by_id(db)
        for query in QUERIES:
            expected = reference_scores(reference_model, query, list(docs.values()))
            got = rerank(db, query, list(docs))
            assert [r[1] for r in got] == list(range(1, len(docs) + 1))
            by_id = {i: score for i, _, score in got}
            # float16 document vectors: MaxSim within 1e-3 of the float32 reference
            assert [by_id[i] for i in docs] == pytest.approx(expected, abs=1e-3)
            assert [r[2] for r in got] == sorted((r[2] for r in got), reverse=True)
    finally:
        db.execute("select hybrid_search_configure(colbert_store => false)")


def test_stored_and_recomputed_vectors_score_the_same(store):
    ids = insert(store, *CORPUS)
    stored = rerank(store, QUERIES[0], ids)
    store.execute("update documents set colbert = null where id = any(%s)", [ids[::2]])
    again = rerank(store, QUERIES[0], ids)
    assert [r[:2] for r in again] == [r[:2] for r in stored]
    assert [r[2] for r in again] == pytest.approx([r[2] for r in stored], abs=1e-6)


def test_stored_vectors_follow_inserts_updates_and_deletes(store, reference_model):
    ids = insert(store, *CORPUS[:4])
    rows = store.execute("select id, content, colbert from documents order by id").fetchall()
    for (_, _, data), expected in zip(
        rows, reference_vectors(reference_model, [r[1] for r in rows]), strict=True
    ):
        assert decode(data) == pytest.approx(expected, abs=1e-3)
    before = store.execute("select colbert from documents where id = %s", [ids[1]]).fetchone()[0]
    # a metadata-only update keeps them; a content update recomputes them
    store.execute("update documents set metadata = '{\"a\": 1}' where id = %s", [ids[1]])
    assert store.execute("select colbert from documents where id = %s", [ids[1]]).fetchone()[0] == (
        before
    )
    store.execute("update documents set content = %s where id = %s", [CORPUS[8], ids[1]])
    (after,) = store.execute("select colbert from documents where id = %s", [ids[1]]).fetchone()
    assert decode(after) == pytest.approx(
        reference_vectors(reference_model, [CORPUS[8]])[0], abs=1e-3
    )
    # a client that sets its own vectors with new content: the old ColBERT vectors go
    store.execute(
        "update documents set content = 'other words', dense = embed_dense('other words'),"
        " sparse = embed_sparse('other words') where id = %s",
        [ids[2]],
    )
    assert store.execute("select colbert from documents where id = %s", [ids[2]]).fetchone() == (
        None,
    )
    store.execute("delete from documents where id = %s", [ids[3]])
    assert [r[0] for r in rerank(store, "vacuum", ids)] != []
    assert ids[3] not in [r[0] for r in rerank(store, "vacuum", ids)]
    # switching storage off drops the stored vectors and stops computing them on write
    store.execute("select hybrid_search_configure(colbert_store => false)")
    assert store.execute("select count(colbert) from documents").fetchone()[0] == 0
    insert(store, "written while storage is off")
    assert store.execute("select count(colbert) from documents").fetchone()[0] == 0


def test_rerank_reorders_the_fused_shortlist(store):
    insert(store, *CORPUS)
    store.execute("select hybrid_search_refresh()")
    changed = False
    for query in QUERIES:
        for fusion in ("weighted", "raw", "rrf"):
            plain = store.execute(
                "select id, score from hybrid_search(%s, 8, fusion => %s)", [query, fusion]
            ).fetchall()
            rows = store.execute(
                "select id, score, dense_score, sparse_score, keyword_score, colbert_rank,"
                " colbert_score from hybrid_search(%s, 5, fusion => %s, colbert_rerank => 8)",
                [query, fusion],
            ).fetchall()
            shortlist = dict(plain)
            # re-ranking only reorders the fused top 8
            assert {r[0] for r in rows} <= set(shortlist)
            maxsim = dict((r[0], r[2]) for r in rerank(store, query, list(shortlist)))
            assert [r[6] for r in rows] == pytest.approx([maxsim[r[0]] for r in rows])
            ranks = {i: n for n, i in enumerate(sorted(maxsim, key=lambda i: (-maxsim[i], i)), 1)}
            assert [r[5] for r in rows] == [ranks[r[0]] for r in rows]
            lo, hi = min(maxsim.values()), max(maxsim.values())
            for i, score, *_, c_rank, c_score in rows:
                first = shortlist[i]
                if fusion == "raw":  # BGE-M3's 'All': 0.4 dense + 0.2 sparse + 0.4 colbert
                    expected = first + 0.4 * c_score
                elif fusion == "rrf":
                    expected = first + 1 / (60 + c_rank)
                else:
                    expected = (first * 0.8 + 0.4 * (c_score - lo) / (hi - lo)) / 1.2
                assert score == pytest.approx(expected)
            expected_order = sorted(rows, key=lambda r: (-r[1], r[0]))
            assert rows == expected_order
            changed |= [r[0] for r in rows] != [i for i, _ in plain[:5]]
        # with ColBERT alone deciding, the order is MaxSim's
        rows = store.execute(
            "select id, colbert_rank from hybrid_search(%s, 5, colbert_rerank => 8,"
            " colbert_weight => 1e9)",
            [query],
        ).fetchall()
        assert [r[1] for r in rows] == [1, 2, 3, 4, 5]
    assert changed, "re-ranking never changed an order"
    # a shortlist smaller than k is widened to k
    assert (
        len(
            store.execute("select * from hybrid_search('index', 6, colbert_rerank => 2)").fetchall()
        )
        == 6
    )


def test_rerank_argument_errors(store):
    ids = insert(store, *CORPUS[:3])
    assert rerank(store, "index", []) == []
    assert [r[0] for r in rerank(store, "index", [ids[1], None, ids[1]])] == [ids[1]]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="colbert_rerank must be"):
        store.execute("select * from hybrid_search('index', 5, colbert_rerank => -1)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="colbert_weight"):
        store.execute(
            "select * from hybrid_search('index', 5, colbert_rerank => 5, colbert_weight => -1)"
        )
    q = store.execute("select dense, sparse from embed('index')").fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="needs the query text"):
        store.execute("select * from hybrid_search(null, %s, %s, colbert_rerank => 5)", list(q))
    # without colbert_rerank nothing changes: no ColBERT columns
    assert {r[0] for r in store.execute("select colbert_rank from hybrid_search('index', 3)")} == {
        None
    }


TENANTS = {"colbert_a": CORPUS[:6], "colbert_b": CORPUS[6:]}


def test_rerank_sees_only_the_callers_rows(store):
    for tenant, contents in TENANTS.items():
        insert(store, *contents, metadata={"tenant": tenant})
    store.execute("select hybrid_search_refresh()")
    all_ids = [r[0] for r in store.execute("select id from documents")]
    own = {
        t: {
            r[0]
            for r in store.execute("select id from documents where metadata->>'tenant' = %s", [t])
        }
        for t in TENANTS
    }
    owner = {q: {r[0]: r[2] for r in rerank(store, q, all_ids)} for q in QUERIES}
    store.execute("alter table documents enable row level security")
    store.execute(
        "create policy colbert_tenants on documents using (metadata->>'tenant' = current_user)"
    )
    try:
        for tenant in TENANTS:
            store.execute(f"create role {tenant}")
            store.execute("select hybrid_search_grant(%s, 'search')", [tenant])
        for tenant in TENANTS:
            store.execute(f"set role {tenant}")
            for query in QUERIES:
                got = rerank(store, query, all_ids)
                # MaxSim of exactly the caller's rows, with the owner's scores
                assert {r[0] for r in got} == own[tenant]
                assert [r[2] for r in got] == pytest.approx([owner[query][r[0]] for r in got])
                rows = store.execute(
                    "select id, colbert_rank, colbert_score"
                    " from hybrid_search(%s, 5, colbert_rerank => 10)",
                    [query],
                ).fetchall()
                assert rows and {r[0] for r in rows} <= own[tenant]
                assert all(r[1] is not None for r in rows)
                assert [r[2] for r in rows] == pytest.approx([owner[query][r[0]] for r in rows])
            store.execute("reset role")
    finally:
        store.execute("reset role")
        store.execute("drop policy colbert_tenants on documents")
        store.execute("alter table documents disable row level security")
        for tenant in TENANTS:
            store.execute(f"drop owned by {tenant}")
            store.execute(f"drop role if exists {tenant}")


def test_queued_writes_store_vectors_when_the_worker_embeds(store):
    store.execute("select hybrid_search_configure(embed_mode => 'queued')")
    (doc_id,) = insert(store, CORPUS[0])
    assert store.execute("select colbert from documents where id = %s", [doc_id]).fetchone() == (
        None,
    )
    store.execute("call hybrid_search_worker()")
    (data,) = store.execute("select colbert from documents where id = %s", [doc_id]).fetchone()
    assert data is not None and len(data) % (2 * DIM) == 0
    # re-ranking reads what the worker stored: the same score as recomputing it
    stored = rerank(store, QUERIES[0], [doc_id])
    store.execute("update documents set colbert = null")
    assert [r[2] for r in rerank(store, QUERIES[0], [doc_id])] == pytest.approx(
        [r[2] for r in stored], abs=1e-6
    )
