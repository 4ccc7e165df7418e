"""Preloading the model stack in the postmaster (hybrid_search.so).

The session's cluster preloads, as our tooling configures one; the clusters
here show what happens without it, with a wrong virtualenv, and when a
library leaves a thread in the postmaster.
"""

import os
import re
import time

import psycopg
import pytest
from helpers import connect, create_database
from hybrid_search.environment import site_packages
from hybrid_search_installer.cluster import Cluster

IMPORTED = """
create or replace function pg_temp.imported() returns text language plpython3u as $$
    import sys
    return ",".join(m for m in ("FlagEmbedding", "torch", "hybrid_search") if m in sys.modules)
$$
"""


def imported(conn) -> str:
    conn.execute(IMPORTED)
    return conn.execute("select pg_temp.imported()").fetchone()[0]


def private_mb(conn) -> float:
    return conn.execute(
        "select private_mb from hybrid_search_backend_memory() where pid = pg_backend_pid()"
    ).fetchone()[0]


def test_a_new_backend_finds_the_stack_imported_but_not_our_module(dsn):
    with connect(dsn) as conn:
        # our module is imported fresh in each backend: an update needs no restart
        assert imported(conn) == "FlagEmbedding,torch"
        conn.execute("select embed_dense('a first query')")
        assert imported(conn) == "FlagEmbedding,torch,hybrid_search"


def test_a_backend_exits_through_postgres_cleanup(dsn, cluster):
    """The preloaded libraries' destructors are skipped at exit, PostgreSQL's
    own cleanup is not: temporary tables go, and no exit counts as a crash."""
    closed, terminated = connect(dsn), connect(dsn)
    pids = []
    for conn in (closed, terminated):
        conn.execute("create temporary table scratch as select embed_dense('x') as v")
        pids.append(conn.execute("select pg_backend_pid()").fetchone()[0])
    closed.close()
    with connect(dsn) as conn:
        assert conn.execute("select pg_terminate_backend(%s, 10000)", [pids[1]]).fetchone()[0]
        deadline = time.monotonic() + 10
        while conn.execute(
            "select count(*) from pg_stat_activity where pid = %s", [pids[0]]
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the closed backend did not exit"
            time.sleep(0.1)
        leftover = conn.execute(
            "select count(*) from pg_class where relpersistence = 't' and relname = 'scratch'"
        ).fetchone()[0]
        assert leftover == 0
    terminated.close()
    # a parallel worker that raised an ERROR exits with code 1 (test_adversarial_parallel.py
    # makes some): that is no crash
    worker_error = r'background worker "parallel worker" \(PID \d+\) exited with exit code 1'
    log = re.sub(worker_error, "", cluster.log.read_text())
    assert "terminated by signal" not in log and "exited with exit code" not in log


BROKEN_PRELOAD = """
import json, decimal  # noqa: imported before the failure: preloading must drop them again


def run():
    raise SystemExit(3)  # would end the postmaster if it reached Python's own handler
"""


@pytest.fixture(scope="module")
def unpreloaded(scratch, layout, model_dir):
    """A cluster whose preload fails midway (a virtualenv whose preload exits): it
    starts, warns, and its backends import the stack themselves."""
    site = site_packages(str(scratch / "broken-venv")) / "hybrid_search"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    (site / "preload.py").write_text(BROKEN_PRELOAD)
    for path in [scratch / "broken-venv", *(scratch / "broken-venv").rglob("*")]:
        path.chmod(0o755)
    cluster = Cluster(scratch / "no-preload-cluster", port=5435)
    cluster.init()
    cluster.preload(scratch / "broken-venv")
    cluster.start()
    try:
        yield cluster, create_database(cluster, layout, model_dir, "unpreloaded")
    finally:
        cluster.destroy()


def test_a_failed_preload_warns_and_backends_import_for_themselves(unpreloaded, layout):
    cluster, dsn = unpreloaded
    log = cluster.log.read_text()
    assert "could not preload the model stack" in log and "SystemExit: 3" in log
    with connect(dsn) as conn:
        # what the failed attempt imported stays (a C extension module cannot be
        # initialised twice in one process); our own module goes, as on success
        conn.execute(
            "create or replace function pg_temp.leftovers() returns text language plpython3u as $$"
            "\n    import sys"
            "\n    names = ('json', 'decimal', 'hybrid_search')"
            "\n    return ','.join(m for m in names if m in sys.modules)"
            "\n$$"
        )
        assert conn.execute("select pg_temp.leftovers()").fetchone()[0] == "json,decimal"
        assert len(conn.execute("select embed_dense('a query')::real[]").fetchone()[0]) > 0
        loaded = conn.execute("select hybrid_search_load_python()").fetchone()[0]
        assert loaded.startswith(str(layout.venv))


# A FlagEmbedding that fails to import after numpy (a C extension) has loaded, as
# FlagEmbedding 1.4.2 did under transformers 5.24.
FAILING_FLAGEMBEDDING = """
import numpy  # noqa: F401

raise ImportError("cannot import name 'AttentionMaskConverter' (simulated by the test)")
"""


@pytest.fixture(scope="module")
def failed_stack(scratch, layout, model_dir):
    """A cluster preloading, and a database using, a virtualenv that is the real one
    (a link to each of its packages) but for FlagEmbedding, which fails to import."""
    venv = scratch / "failing-venv"
    site = site_packages(str(venv))
    site.mkdir(parents=True)
    for entry in site_packages(str(layout.venv)).iterdir():
        if not entry.name.lower().startswith("flagembedding"):
            (site / entry.name).symlink_to(entry)
    (site / "FlagEmbedding").mkdir()
    (site / "FlagEmbedding" / "__init__.py").write_text(FAILING_FLAGEMBEDDING)
    # only what this fixture made: a chmod through a link would change the real virtualenv
    made = [site / "FlagEmbedding" / "__init__.py", site / "FlagEmbedding", site]
    for path in [*made, *site.parents[: len(site.relative_to(venv).parts)]]:
        path.chmod(0o755)
    cluster = Cluster(scratch / "failed-stack-cluster", port=5437)
    cluster.init()
    cluster.preload(venv)
    cluster.start()
    try:
        dsn = create_database(cluster, layout, model_dir, "failed_stack")
        with connect(dsn) as conn:
            # embedded while the database still used the working virtualenv
            conn.execute("insert into documents (content) values ('vacuum reclaims storage')")
            conn.execute("select hybrid_search_configure(python_venv => %s)", [str(venv)])
        yield cluster, dsn
    finally:
        cluster.destroy()


def test_a_stack_that_fails_to_import_leaves_backends_working(failed_stack):
    cluster, dsn = failed_stack
    assert "simulated by the test" in cluster.log.read_text()
    with connect(dsn) as conn:
        # the legs that need no model work: numpy was not taken away from the backend
        assert conn.execute("select count(*) from keyword_search('vacuum', 5)").fetchone()[0] == 1
        with pytest.raises(psycopg.Error, match=r"ImportError: cannot import name .*simulated"):
            conn.execute("select embed_dense('a query')")
        status, detail = preload_check(conn)
        assert status == "error" and "simulated by the test" in detail


def test_backends_do_not_share_the_postmasters_random_state(dsn):
    """Python's after-fork handling runs in every backend: random generators are
    reseeded (random registers that with os.register_at_fork)."""
    draw = (
        "create or replace function pg_temp.draw() returns float8 language plpython3u as $$"
        "\n    import random"
        "\n    return random.random()"
        "\n$$"
    )
    draws = []
    for _ in range(2):
        with connect(dsn) as conn:
            conn.execute(draw)
            draws.append(conn.execute("select pg_temp.draw()").fetchone()[0])
    assert draws[0] != draws[1]


def test_preloading_keeps_the_stack_out_of_each_backends_private_memory(dsn, unpreloaded):
    _, unpreloaded_dsn = unpreloaded
    with connect(dsn) as preloaded, connect(unpreloaded_dsn) as alone:
        for conn in (preloaded, alone):
            conn.execute("select embed_dense('how does vacuum work')")
        shared, own = private_mb(preloaded), private_mb(alone)
    # the imports are most of an embedding backend's own memory (docs/memory.md: Preloading)
    assert own > 200
    assert shared < own / 3


def test_a_thread_left_in_the_postmaster_stops_the_start(scratch, layout, monkeypatch):
    cluster = Cluster(scratch / "threaded-cluster", port=5436)
    cluster.init()
    cluster.preload(layout.venv)
    # asks numpy's OpenBLAS for a thread pool as it loads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    try:
        with pytest.raises(SystemExit, match=r"preloading left [0-9]+ threads in the postmaster"):
            cluster.start()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cluster.dsn("postgres"), connect_timeout=2)
    finally:
        cluster.destroy()


def preload_check(conn) -> tuple[str, str]:
    return conn.execute(
        "select status, detail from hybrid_search_check() where check_name = 'preload'"
    ).fetchone()


def test_the_check_tells_whether_the_stack_was_preloaded(dsn, unpreloaded):
    with connect(dsn) as conn:
        assert conn.execute("show hybrid_search.preloaded").fetchone()[0] == "on"
        status, detail = preload_check(conn)
        assert status == "ok" and "preloaded the model stack" in detail
    with connect(unpreloaded[1]) as conn:
        assert conn.execute("show hybrid_search.preloaded").fetchone()[0] == "off"
        status, detail = preload_check(conn)
        assert status == "error" and "SystemExit: 3" in detail


def test_a_package_installed_after_the_start_is_noticed(tmp_path):
    from hybrid_search.environment import packages_changed_since

    site = site_packages(str(tmp_path))
    ours, numpy = site / "hybrid_search_plpython-0.2.0.dist-info", site / "numpy-2.4.6.dist-info"
    ours.mkdir(parents=True)
    numpy.mkdir()
    started = time.time()
    os.utime(numpy, (started - 10, started - 10))
    os.utime(ours, (started + 2, started + 2))  # our module: backends import it fresh
    assert not packages_changed_since(str(tmp_path), started)
    os.utime(numpy, (started + 2, started + 2))  # pip wrote it anew after the start
    assert packages_changed_since(str(tmp_path), started)
    assert not packages_changed_since(str(tmp_path / "elsewhere"), started)
