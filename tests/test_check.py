"""hybrid_search_check(): clean data reports ok, and each kind of damage done on
purpose is reported with the rows concerned."""

import pytest
from helpers import insert


def checks(conn) -> dict[str, tuple[str, str]]:
    rows = conn.execute("select check_name, status, detail from hybrid_search_check()")
    return {name: (status, detail) for name, status, detail in rows.fetchall()}


@pytest.fixture
def corpus(db):
    ids = insert(db, *[f"document {i} about vacuum, replicas and index {i}" for i in range(40)])
    db.execute("select hybrid_search_refresh()")
    return db, ids


def test_clean_data_is_all_ok(corpus):
    db, ids = corpus
    found = checks(db)
    assert {name for name, (status, _) in found.items() if status != "ok"} == set(), found
    assert {
        "embeddings",
        "embedding_queue",
        "embedding_errors",
        "model",
        "fts",
        "dense_index",
        "sparse_index",
        "token_stats",
    } <= set(found)
    # writes after the refresh are on the change list, which the check accounts for
    insert(db, "a new document about vacuum")
    db.execute("update documents set content = 'changed text' where id = %s", [ids[0]])
    db.execute("delete from documents where id = %s", [ids[1]])
    assert {s for s, _ in checks(db).values()} == {"ok"}


def test_not_built_index_is_a_warning(db):
    insert(db, "never refreshed")
    status, detail = checks(db)["sparse_index"]
    assert status == "warning" and "hybrid_search_refresh" in detail


def test_missing_embedding_and_foreign_model_are_reported(corpus):
    db, ids = corpus
    db.execute("update documents set dense = null where id = %s", [ids[3]])
    db.execute("update documents set model = 'another-model' where id = %s", [ids[4]])
    found = checks(db)
    assert found["embeddings"][0] == "error" and str(ids[3]) in found["embeddings"][1]
    assert found["model"][0] == "error" and str(ids[4]) in found["model"][1]


def test_rows_nothing_will_embed_are_told_from_queued_and_failed_ones(corpus):
    db, ids = corpus
    db.execute(
        "select hybrid_search_configure(embed_mode => 'queued', queue_max_attempts => 1,"
        " max_content_chars => 100)"
    )
    queued = insert(db, "waiting for a worker", "also waiting")
    (failed,) = insert(db, "far too long " * 20)
    # the worker embeds the short rows and gives up on the long one at once
    assert db.execute("call hybrid_search_worker()").fetchone() == (2, 1)
    queued += insert(db, "queued after the worker ran", "and another")
    db.execute("update documents set dense = null where id = %s", [ids[5]])  # lost
    found = checks(db)
    status, detail = found["embeddings"]
    assert status == "error" and "neither queued nor in hybrid_search_errors" in detail
    assert f"ids {ids[5]})" in detail and "hybrid_search_backfill()" in detail
    assert found["embedding_queue"][0] == "ok" and "2 rows" in found["embedding_queue"][1]
    status, detail = found["embedding_errors"]
    assert status == "warning" and f"ids {failed})" in detail
    assert "hybrid_search_retry_errors()" in detail

    # the fixes the details name
    db.execute("select hybrid_search_backfill()")
    assert checks(db)["embeddings"][0] == "ok"
    db.execute("select hybrid_search_configure(max_content_chars => 1000000)")
    db.execute("select hybrid_search_retry_errors()")
    db.execute("call hybrid_search_worker()")
    found = checks(db)
    assert [found[n][0] for n in ("embeddings", "embedding_queue", "embedding_errors")] == [
        "ok",
        "ok",
        "ok",
    ], found
    assert found["embeddings"][1] == f"all {len(ids) + 5} rows are embedded"


def test_stale_fts_is_reported(corpus):
    db, ids = corpus
    db.execute("update documents set fts = to_tsvector('simple', 'zzz') where id = %s", [ids[5]])
    status, detail = checks(db)["fts"]
    assert status == "error" and f"ids {ids[5]})" in detail


def test_sparse_write_that_bypassed_the_triggers_is_reported(corpus):
    db, ids = corpus
    # replica mode skips triggers, so the change list never hears of this write
    db.execute("set session_replication_role = replica")
    try:
        db.execute(
            "update documents set sparse = embed_sparse('something else') where id = %s", [ids[6]]
        )
        db.execute("delete from documents where id = %s", [ids[7]])
    finally:
        db.execute("reset session_replication_role")
    status, detail = checks(db)["sparse_index"]
    assert status == "error" and f"ids {ids[6]}, {ids[7]})" in detail
    db.execute("select hybrid_search_refresh()")
    assert checks(db)["sparse_index"][0] == "ok"


def test_damaged_postings_are_reported(corpus):
    db, _ = corpus
    token, block = db.execute(
        "select token_id, block from hybrid_search_sparse_postings"
        " where octet_length(weights) > 4 order by token_id limit 1"
    ).fetchone()
    # reverse the weights: wrong order, wrong max_weight, still the same entries
    db.execute(
        "update hybrid_search_sparse_postings set weights ="
        " (select string_agg(substr(weights, 1 + 4 * i, 4), '' order by i desc)"
        "  from generate_series(0, octet_length(weights) / 4 - 1) i)"
        " where token_id = %s and block = %s",
        [token, block],
    )
    found = checks(db)
    assert found["sparse_index_blocks"][0] == "error"
    assert f"token {token} block {block}" in found["sparse_index_blocks"][1]
    assert found["sparse_index"][0] == "error"  # weights moved to other documents
    db.execute("delete from hybrid_search_sparse_postings where token_id = %s", [token])
    assert checks(db)["token_stats"][0] == "error"


def test_missing_dense_index_is_a_warning(corpus):
    db, _ = corpus
    db.execute("select hybrid_search_create_dense_index('none')")
    try:
        assert checks(db)["dense_index"][0] == "warning"
    finally:
        db.execute("select hybrid_search_create_dense_index()")
    assert checks(db)["dense_index"][0] == "ok"
