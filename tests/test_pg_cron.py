"""Queue workers run by pg_cron (Debian's postgresql-15-cron, installed by setup),
on a cluster of its own started with shared_preload_libraries = 'pg_cron'."""

import re
import time

import pytest
from helpers import connect, create_database, insert
from hybrid_search_installer.cluster import Cluster

DATABASE = "cron"


@pytest.fixture(scope="module")
def cron_conn(scratch, layout, model_dir):
    cluster = Cluster(scratch / "cron-cluster", port=5434)
    cluster.init()
    cluster.configure(
        {
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": f"'{DATABASE}'",
            # jobs run in background workers: no connection, so no password or cron.host
            "cron.use_background_workers": "on",
        },
        heading="pg_cron",
    )
    cluster.start()
    try:
        dsn = create_database(cluster, layout, model_dir, DATABASE)
        with connect(dsn) as conn:
            conn.execute("create extension pg_cron")
            yield conn
    finally:
        cluster.destroy()


def test_pg_cron_drains_the_queue(cron_conn):
    conn = cron_conn
    conn.execute("select hybrid_search_configure(embed_mode => 'queued', batch_size => 4)")
    ids = insert(conn, *(f"queued row {i} about vacuum and WAL" for i in range(10)))
    assert conn.execute("select count(*) from hybrid_search_queue").fetchone()[0] == 10
    version = conn.execute("select extversion from pg_extension where extname = 'pg_cron'")
    major, minor = (int(part) for part in re.findall(r"\d+", version.fetchone()[0])[:2])
    # pg_cron 1.5 schedules in seconds; Debian 12's 1.4 every minute at the earliest
    schedule, timeout = ("1 seconds", 60) if (major, minor) >= (1, 5) else ("* * * * *", 150)
    (job,) = conn.execute(
        "select cron.schedule('hybrid_search', %s, 'CALL hybrid_search_worker()')", [schedule]
    ).fetchone()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = conn.execute(
                "select (select count(*) from hybrid_search_queue),"
                " (select count(*) from documents where dense is null or sparse is null)"
            ).fetchone()
            if left == (0, 0):
                break
            time.sleep(0.5)
        assert left == (0, 0), f"queue and unembedded rows after {timeout} s: {left}"
        runs = conn.execute(
            "select status, return_message from cron.job_run_details where jobid = %s", [job]
        ).fetchall()
        assert runs and all(status in ("running", "succeeded") for status, _ in runs), runs
        embedded = conn.execute(
            "select count(*) from documents where id = any(%s) and dense is not null"
            " and sparse is not null and embedded_at is not null",
            [ids],
        ).fetchone()[0]
        assert embedded == 10
        # the scheduled worker committed batches of batch_size 4, each logged
        batches = conn.execute(
            "select sum(embedded), count(*) filter (where embedded > 0)"
            " from hybrid_search_worker_log"
        ).fetchone()
        assert batches == (10, 3)
    finally:
        assert conn.execute("select cron.unschedule(%s)", [job]).fetchone()[0]
    assert conn.execute("select count(*) from cron.job").fetchone()[0] == 0
