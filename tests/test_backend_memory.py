"""hybrid_search_backend_memory: what each server process costs, for monitoring."""

import psycopg
import pytest
from helpers import connect


def test_lists_backends_with_their_memory_and_who_loaded_torch(db, dsn):
    db.execute("select embed_dense('load the model here')")
    idle = connect(dsn)  # a backend that never embedded
    try:
        idle_pid = idle.execute("select pg_backend_pid()").fetchone()[0]
        rows = {
            r[0]: r[1:]
            for r in db.execute(
                "select pid, torch_loaded, rss_mb, pss_mb, private_mb, backend_type,"
                " model_files_mapped from hybrid_search_backend_memory()"
            )
        }
        me = db.execute("select pg_backend_pid()").fetchone()[0]
        # the session's server preloads torch in the postmaster: every process maps it
        assert rows[me][0] is True and rows[idle_pid][0] is True
        assert rows[me][5] > 0 and rows[idle_pid][5] == 0  # only the embedding one maps weights
        assert rows[me][1] > rows[idle_pid][1] > 0  # the model costs RSS
        assert all(r[2] > 0 and r[3] > 0 for r in rows.values())
        assert "checkpointer" in {r[4] for r in rows.values()}
    finally:
        idle.close()


def test_is_for_monitoring_roles_only(db, dsn):
    db.execute("drop role if exists hs_nobody")
    db.execute("create role hs_nobody login")
    try:
        with (
            connect(dsn.replace("user=postgres", "user=hs_nobody")) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("select * from hybrid_search_backend_memory()")
        db.execute("grant pg_monitor to hs_nobody")
        with connect(dsn.replace("user=postgres", "user=hs_nobody")) as conn:
            assert conn.execute("select count(*) from hybrid_search_backend_memory()").fetchone()[0]
    finally:
        db.execute("drop role hs_nobody")


def test_kept_free_memory_keeps_a_querys_memory_for_the_next(dsn):
    """hybrid_search.kept_free_memory: memory a query freed stays in the backend (no
    page faults to take it again) up to the setting; 0 gives it back to the kernel."""
    rss_kb = "substring(pg_read_file('/proc/self/status') from 'VmRSS:\\s+(\\d+)')::bigint"
    six_mb = "select length(repeat('x', 6000000))"  # a 6 MB value, freed at the query's end

    def grows_by_kb(conn):
        before = conn.execute(f"select {rss_kb}").fetchone()[0]
        conn.execute(six_mb)
        return conn.execute(f"select {rss_kb}").fetchone()[0] - before

    with connect(dsn) as conn:
        conn.execute("load 'hybrid_search'")
        conn.execute("set hybrid_search.kept_free_memory = 0")
        assert grows_by_kb(conn) < 3000
        conn.execute("reset hybrid_search.kept_free_memory")
        assert conn.execute("show hybrid_search.kept_free_memory").fetchone()[0] == "16MB"
        assert grows_by_kb(conn) > 6000
        conn.execute("set hybrid_search.kept_free_memory = 0")
        assert grows_by_kb(conn) < -3000  # the next query's end trims what was kept
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("set hybrid_search.kept_free_memory = -1")


def test_only_a_superuser_sets_kept_free_memory(db, dsn):
    """A role cannot have its backend hold freed memory it no longer uses."""
    db.execute("drop role if exists hs_hoarder")
    db.execute("create role hs_hoarder login")
    try:
        with connect(dsn.replace("user=postgres", "user=hs_hoarder")) as conn:
            # the test server preloads hybrid_search: the setting is defined
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("set hybrid_search.kept_free_memory = '1GB'")
            assert conn.execute("show hybrid_search.kept_free_memory").fetchone()[0] == "16MB"
    finally:
        db.execute("drop role hs_hoarder")
