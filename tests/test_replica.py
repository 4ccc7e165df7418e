"""`hybrid-search replica`: a streaming hot standby of the local cluster answers
hybrid_search exactly as the primary does, embedding the query itself and
writing nothing."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import connect, insert

CLI = Path(sys.executable).with_name("hybrid-search")
QUERIES = ["vacuum dead tuples", "replica lag", "index 12", "wal"]


@pytest.fixture(scope="module")
def home(scratch, layout, model_dir):
    home = scratch / "replica-home"
    home.mkdir(mode=0o755)
    (home / "venv").symlink_to(layout.venv)
    # the PostgreSQL copy with this checkout's extension files, shared as the venv is
    (home / "postgresql").symlink_to(layout.postgres_root)
    (home / "model.json").write_text(json.dumps({"model": str(model_dir), "kind": "test"}))
    yield home
    run(home, "replica", "stop", check=False)
    run(home, "stop", check=False)


def run(home, *args, check=True):
    env = {
        **os.environ,
        "HYBRID_SEARCH_HOME": str(home),
        "HYBRID_SEARCH_PORT": "54332",
        "HYBRID_SEARCH_REPLICA_PORT": "54333",
    }
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=env, check=check, timeout=300
    )


def wait_for_replay(primary, standby, timeout=60):
    lsn = primary.execute("select pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standby.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()[0]:
            return
        time.sleep(0.2)
    raise AssertionError("the standby did not catch up")


def searches(conn):
    return {
        q: conn.execute("select id, score from hybrid_search(%s, 10)", [q]).fetchall()
        for q in QUERIES
    }


def test_standby_answers_like_the_primary(home):
    refused = run(home, "replica", check=False)  # no primary yet
    assert refused.returncode != 0 and "hybrid-search start" in refused.stderr
    run(home, "start")
    with connect(run(home, "dsn").stdout.strip()) as primary:
        # one thread per query embedding on both servers: with query_threads 0 each follows
        # its own idle cores, and another thread count sums the same vector in another order
        primary.execute("select hybrid_search_configure(query_threads => 1)")
        insert(primary, *[f"index {i}: vacuum removes dead tuples" for i in range(40)])
        insert(primary, "replica lag grows when the standby cannot keep up with WAL")
        primary.execute("select hybrid_search_refresh()")

        out = run(home, "replica").stdout
        assert "install  standby" in out and "install  standby running" in out
        assert "install" not in run(home, "replica").stdout  # idempotent
        standby_dsn = run(home, "replica", "dsn").stdout.strip()
        assert "port=54333" in standby_dsn

        with connect(standby_dsn) as standby:
            assert standby.execute("select pg_is_in_recovery()").fetchone()[0]
            wait_for_replay(primary, standby)
            expected = searches(primary)
            assert all(expected.values())
            assert searches(standby) == expected
            # search itself writes nothing: it runs in read-only transactions too
            primary.execute("set default_transaction_read_only = on")
            assert searches(primary) == expected
            primary.execute("reset default_transaction_read_only")

            # later writes stream over; the standby finds them through the change list
            (new_id,) = insert(primary, "wal wal wal: a brand new document about wal")
            wait_for_replay(primary, standby)
            assert searches(standby) == searches(primary)
            assert new_id in [r[0] for r in searches(standby)["wal"]]
            checks = standby.execute("select status from hybrid_search_check()").fetchall()
            assert {s for (s,) in checks} == {"ok"}

            # the sparse_inverted index: merged by VACUUM on the primary, rows pending
            # after it, all replayed through generic WAL
            primary.execute("vacuum documents")
            insert(primary, *[f"wal segment {i} archived" for i in range(30)])
            wait_for_replay(primary, standby)
            ordered = (
                "select id, sparse <#> embed_sparse('wal segment') from documents"
                " order by sparse <#> embed_sparse('wal segment') limit 50"
            )
            results = []
            for conn in (primary, standby):
                conn.execute("set enable_seqscan = off")
                plan = " ".join(r[0] for r in conn.execute("explain " + ordered))
                assert "documents_sparse_idx" in plan, plan
                results.append(
                    (
                        [d for _, d in conn.execute(ordered).fetchall()],
                        conn.execute("select * from sparse_search('wal segment', 20)").fetchall(),
                    )
                )
                conn.execute("reset enable_seqscan")
            assert results[0] == results[1] and results[0][1]
            checks = {n: s for n, s, _ in standby.execute("select * from hybrid_search_check()")}
            assert checks["sparse_access_method"] == "ok"

    assert run(home, "replica", "stop").stdout.strip() == "stopped"
