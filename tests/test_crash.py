"""Crash safety on a cluster of its own: a backend killed with SIGKILL in the
middle of a batch embedding, and the server stopped with `pg_ctl -m immediate`
during a bulk load. After recovery every committed row is there and embedded,
nothing of the interrupted transactions is, and hybrid_search_check() is clean."""

import os
import signal
import threading
import time

import psycopg
import pytest
from helpers import connect, create_database, insert, own_cluster

BULK = "insert into documents (content) select 'bulk row ' || i from generate_series(1, 20000) i"


@pytest.fixture(scope="module")
def crash_cluster(scratch):
    yield from own_cluster(scratch / "crash-cluster", 5433)


@pytest.fixture(scope="module")
def crash_dsn(crash_cluster, layout, model_dir):
    return create_database(crash_cluster, layout, model_dir, "crash")


def reconnect(dsn, timeout=60):
    """A connection once the server accepts them again (after crash recovery)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(dsn)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_until_running(conn, pid, needle, seconds=3.0):
    """Wait until backend pid has been running a statement containing needle for a while."""
    for _ in range(200):
        row = conn.execute(
            "select now() - query_start from pg_stat_activity"
            " where pid = %s and state = 'active' and query like %s",
            [pid, f"%{needle}%"],
        ).fetchone()
        if row and row[0].total_seconds() >= seconds:
            return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} never ran {needle!r}")


def assert_consistent(conn, expected_ids):
    ids = {i for (i,) in conn.execute("select id from documents")}
    assert expected_ids <= ids
    unembedded = conn.execute(
        "select count(*) from documents where dense is null or sparse is null"
        " or embedded_at is null or fts is null"
    ).fetchone()[0]
    assert unembedded == 0
    checks = {n: (s, d) for n, s, d in conn.execute("select * from hybrid_search_check()")}
    assert {s for s, _ in checks.values()} == {"ok"}, checks
    assert conn.execute("select count(*) from hybrid_search('bulk row', 5)").fetchone()[0] == 5
    return ids


def test_kill_9_during_batch_embedding(crash_dsn):
    with connect(crash_dsn) as conn:
        conn.execute("truncate documents restart identity")
        committed = set(insert(conn, *[f"committed row {i}" for i in range(30)]))
        conn.execute("select hybrid_search_refresh()")
        committed |= set(
            insert(conn, *[f"bulk row committed after the refresh {i}" for i in range(10)])
        )
        conn.execute("select hybrid_search_configure(batch_size => 4)")

    victim = connect(crash_dsn)
    pid = victim.execute("select pg_backend_pid()").fetchone()[0]
    victim.execute("select embed_dense('load the model')")
    failure = []

    def bulk():
        try:
            victim.execute(BULK)
        except psycopg.Error as error:
            failure.append(error)

    thread = threading.Thread(target=bulk)
    thread.start()
    with connect(crash_dsn) as watcher:
        wait_until_running(watcher, pid, "bulk row")
        os.kill(pid, signal.SIGKILL)  # in the middle of the trigger's model calls
    thread.join()
    victim.close()
    assert failure and isinstance(failure[0], psycopg.OperationalError)

    with reconnect(crash_dsn) as conn:
        ids = assert_consistent(conn, committed)
        assert ids == committed  # nothing of the killed INSERT survived
        conn.execute("select hybrid_search_refresh()")
        assert_consistent(conn, committed)
        conn.execute("select hybrid_search_configure(batch_size => 32)")


def test_immediate_shutdown_during_bulk_load(crash_cluster, crash_dsn):
    with connect(crash_dsn) as conn:
        conn.execute("truncate documents restart identity")
        insert(conn, "bulk row before the load")
        conn.execute("select hybrid_search_refresh()")
    acknowledged: set[int] = set()
    failure = []

    def load():
        try:
            with connect(crash_dsn) as writer:
                for n in range(10_000):  # until the server goes away
                    acknowledged.update(insert(writer, *[f"bulk row {n}-{i}" for i in range(20)]))
        except psycopg.Error as error:
            failure.append(error)

    thread = threading.Thread(target=load)
    thread.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 200 and time.monotonic() < deadline:  # the load is under way
        time.sleep(0.1)
    crash_cluster.stop(mode="immediate")
    thread.join()
    assert failure and acknowledged
    crash_cluster.start()

    with reconnect(crash_dsn) as conn:
        # rows whose commit was not acknowledged may or may not be there; if there, embedded
        ids = assert_consistent(conn, acknowledged)
        assert len(ids - acknowledged) <= 1 + 20
        conn.execute("select hybrid_search_refresh()")
        assert_consistent(conn, acknowledged)
