"""hybrid_search_check(): clean data reports ok, and each kind of damage done on
purpose is reported with the rows concerned."""

import re

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
        "sparse_access_method",
        "dense_filter_access_method",
        "token_stats",
    } <= set(found)
    # the default dense index scores rows one by one until VACUUM links them into its graph
    graph = found["dense_filter_access_method"][1]
    assert re.search(r", [1-9][0-9]* not yet linked into its graph", graph), graph
    db.execute("vacuum documents")
    graph = checks(db)["dense_filter_access_method"][1]
    assert ", 0 not yet linked into its graph" in graph, graph
    # writes after the refresh are in the index at once; the statistics say they are behind
    insert(db, "a new document about vacuum")
    db.execute("update documents set content = 'changed text' where id = %s", [ids[0]])
    db.execute("delete from documents where id = %s", [ids[1]])
    found = checks(db)
    assert {s for s, _ in found.values()} == {"ok"}, found
    assert "changed since the last refresh" in found["token_stats"][1]


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


def test_missing_dense_index_is_a_warning(corpus):
    db, _ = corpus
    db.execute("select hybrid_search_create_dense_index('none')")
    try:
        assert checks(db)["dense_index"][0] == "warning"
    finally:
        db.execute("select hybrid_search_create_dense_index()")
    assert checks(db)["dense_index"][0] == "ok"
