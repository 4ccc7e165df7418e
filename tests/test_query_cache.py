"""The query-embedding cache shared by backends, its privacy between roles and its
statistics; the number format hybrid_search_model_info reports."""

import pytest
from helpers import connect, model_calls
from psycopg import sql


def stats(conn):
    return conn.execute(
        "select hits, misses, entries from hybrid_search_query_cache_stats"
    ).fetchone()


@pytest.fixture
def cache(db):
    db.execute("select hybrid_search_query_cache_clear()")
    return db


def test_another_backend_reuses_a_query_embedding(cache, dsn):
    first = cache.execute("select embed_dense('shared cache: vacuum a busy table')").fetchone()[0]
    assert stats(cache) == (0, 1, 1)
    with connect(dsn) as other:
        other.execute("select hybrid_search_model_info()")  # loads the model, embeds nothing
        calls = model_calls(other)
        again = other.execute("select embed_dense('shared cache: vacuum a busy table')").fetchone()
        assert model_calls(other) == calls  # no forward pass: found in the shared table
        assert again[0].to_list() == first.to_list()
        sparse = other.execute("select embed_sparse('shared cache: vacuum a busy table')")
        assert (
            sparse.fetchone()[0]
            == cache.execute("select embed_sparse('shared cache: vacuum a busy table')").fetchone()[
                0
            ]
        )
    hits, misses, entries = stats(cache)
    assert (hits, misses, entries) == (1, 1, 1)
    rate = cache.execute("select hit_rate from hybrid_search_query_cache_stats").fetchone()[0]
    assert rate == pytest.approx(0.5)
    # the table holds a hash of the text and the vectors, never the text
    row = cache.execute("select * from hybrid_search_query_cache").fetchone()
    assert b"vacuum" not in b"".join(v for v in row if isinstance(v, bytes))
    assert "vacuum" not in " ".join(str(v) for v in row)


def test_colbert_reranking_keeps_the_shared_query_embedding(cache, dsn):
    # the other backend runs the model for the ColBERT vectors only: the dense and sparse
    # vectors it would compute on another number of threads can differ in their last bits
    text = "shared cache: reindex a bloated index concurrently"
    embedding = "select embed_dense(%s)::real[], embed_sparse(%s)::text"
    cache.execute("select hybrid_search_configure(query_threads => 1)")
    first = cache.execute(embedding, [text, text]).fetchone()
    cache.execute("select hybrid_search_configure(query_threads => 2)")
    with connect(dsn) as other:
        calls = model_calls(other)
        other.execute("select count(*) from hybrid_search(%s, 2, colbert_rerank => 3)", [text])
        assert model_calls(other) == calls + 1  # the ColBERT vectors
        assert other.execute(embedding, [text, text]).fetchone() == first
    assert stats(cache)[:2] == (1, 1)


def test_a_role_sees_and_hits_only_its_own_queries(cache, dsn):
    names = ["hs_cache_alice", "hs_cache_bob"]
    for name in names:
        cache.execute(sql.SQL("create role {}").format(sql.Identifier(name)))
        cache.execute("select hybrid_search_grant(%s, 'search')", [name])
    try:
        with connect(dsn) as alice, connect(dsn) as bob:
            alice.execute("set role hs_cache_alice")
            bob.execute("set role hs_cache_bob")
            alice.execute("select embed_dense('alice looks for a secret merger')")
            assert alice.execute("select count(*) from hybrid_search_query_cache").fetchone() == (
                1,
            )
            # bob sees no row of alice's, and the same text is a miss for him
            assert bob.execute("select count(*) from hybrid_search_query_cache").fetchone() == (0,)
            bob.execute("select hybrid_search_model_info()")
            calls = model_calls(bob)
            bob.execute("select embed_dense('alice looks for a secret merger')")
            assert model_calls(bob) == calls + 1
            # nor can he write a row in alice's name
            with pytest.raises(Exception, match="row-level security"):
                bob.execute(
                    "insert into hybrid_search_query_cache (role_name, key, dense, lexical, entry)"
                    " values ('hs_cache_alice', '\\x00', '\\x00', '\\x00', 1)"
                )
            # the aggregates are for everyone
            assert bob.execute(
                "select entries from hybrid_search_query_cache_stats"
            ).fetchone() == (2,)
    finally:
        for name in names:
            cache.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            cache.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def test_read_only_transactions_read_it_without_writing(cache):
    cache.execute("select embed_dense('stored before the read-only transaction')")
    with cache.transaction():
        cache.execute("set transaction read only")
        cache.execute("select embed_dense('a new text in a read-only transaction')")
        cache.execute("select embed_dense('stored before the read-only transaction')")
    assert stats(cache)[1:] == (1, 1)  # one miss, one entry: nothing written read-only


def test_the_cache_keeps_at_most_query_cache_entries(cache):
    cache.execute("select hybrid_search_configure(query_cache_entries => 10)")
    texts = [f"pruned query number {i}" for i in range(300)]
    cache.execute("select count(embed_dense(t)) from unnest(%s::text[]) as t", [texts])
    _, misses, entries = stats(cache)
    assert misses == 300
    assert entries <= 10 + 300 - 256  # pruned when entry 256 went in


def test_query_cache_entries_0_turns_it_off(cache):
    cache.execute("select hybrid_search_configure(query_cache_entries => 0)")
    cache.execute("select embed_dense('not cached in the shared table')")
    assert stats(cache) == (0, 0, 0)


def test_model_info_reports_the_number_format_and_why(db, model_dir):
    dtype, reason, weights = db.execute(
        "select dtype, dtype_reason, weights from hybrid_search_model_info()"
    ).fetchone()
    assert db.execute("select dtype from hybrid_search_settings").fetchone() == ("auto",)
    assert (dtype, weights) == ("fp32", str(model_dir))  # the tiny model: too small for bf16
    assert reason.startswith("automatic: a small model")
    db.execute("select hybrid_search_configure(dtype => 'bf16')")
    try:
        dtype, reason = db.execute(
            "select dtype, dtype_reason from hybrid_search_model_info()"
        ).fetchone()
        assert (dtype, reason.split(";")[0]) == (
            "bf16",
            "configured: hybrid_search_configure(dtype => 'bf16')",
        )
    finally:
        db.execute("select hybrid_search_configure(dtype => 'auto')")


def test_packed_weights_are_reported_and_embed_as_bf16_did(db):
    """pack_weights (bf16 only): the reason says so; the vectors are bf16's."""
    db.execute("select hybrid_search_configure(dtype => 'bf16', query_cache_entries => 0)")
    try:
        text = "packed weights: vacuum a busy table"
        plain = db.execute("select embed_dense(%s)", [text]).fetchone()[0].to_numpy()
        db.execute("select hybrid_search_configure(pack_weights => true)")
        dtype, reason = db.execute(
            "select dtype, dtype_reason from hybrid_search_model_info()"
        ).fetchone()
        assert dtype == "bf16" and "MB of bf16 weights packed for oneDNN (private)" in reason
        packed = db.execute("select embed_dense(%s)", [text]).fetchone()[0].to_numpy()
        assert abs(packed - plain).max() < 2e-2 and packed.dot(plain) > 0.999
        db.execute("select hybrid_search_configure(dtype => 'fp32')")
        reason = db.execute("select dtype_reason from hybrid_search_model_info()").fetchone()[0]
        assert "only bf16 weights on a CPU with oneDNN are packed" in reason
    finally:
        db.execute(
            "update hybrid_search_config set dtype = null, pack_weights = null,"
            " query_cache_entries = null"
        )
