"""The local-cluster commands of `hybrid-search`, on a home of their own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).with_name("hybrid-search")


@pytest.fixture(scope="module")
def home(scratch, layout, model_dir):
    """A HYBRID_SEARCH_HOME sharing the installed venv, with the test model recorded."""
    home = scratch / "cli-home"
    home.mkdir(mode=0o755)
    (home / "venv").symlink_to(layout.venv)
    # the PostgreSQL copy with this checkout's extension files, shared as the venv is
    (home / "postgresql").symlink_to(layout.postgres_root)
    (home / "model.json").write_text(json.dumps({"model": str(model_dir), "kind": "test"}))
    yield home
    run(home, "stop", check=False)


def run(home, *args, check=True):
    env = {**os.environ, "HYBRID_SEARCH_HOME": str(home), "HYBRID_SEARCH_PORT": "54331"}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=env, check=check, timeout=300
    )


def test_start_status_dsn_psql_stop(home, model_dir):
    assert run(home, "status", check=False).returncode == 3  # not created yet
    first = run(home, "start").stdout
    assert "install  cluster" in first and "install  extension hybrid_search" in first
    again = run(home, "start").stdout  # idempotent
    assert "install" not in again
    assert "running" in run(home, "status").stdout

    dsn = run(home, "dsn").stdout.strip()
    assert f"host={home}/cluster/run" in dsn and "port=54331" in dsn
    out = run(
        home, "psql", "-Atc",
        "insert into documents (content) values ('cli smoke test');"
        " select content from hybrid_search('smoke', 1)",
    ).stdout  # fmt: skip
    assert out.strip().endswith("cli smoke test")

    assert run(home, "stop").stdout.strip() == "stopped"
    assert run(home, "stop").stdout.strip() == "not running"
    assert run(home, "status", check=False).returncode == 3


def test_start_without_setup_says_what_to_do(scratch):
    empty = scratch / "empty-home"
    empty.mkdir(mode=0o755)
    result = run(empty, "start", check=False)
    assert result.returncode != 0
    assert "run `hybrid-search setup` first" in result.stderr


def test_init_sql_configures_any_database(home, model_dir):
    sql = run(home, "init-sql").stdout
    assert "create extension if not exists hybrid_search cascade;" in sql
    assert f"hybrid_search_set_model('{model_dir}')" in sql


def test_convert_model_writes_bf16_weights_the_server_loads(home, model_dir, scratch, db):
    target = scratch / "tiny-bf16"
    result = run(home, "convert-model", str(model_dir), "--target", str(target))
    assert f"SELECT hybrid_search_set_model('{target}')" in result.stdout
    db.execute("select hybrid_search_configure(dtype => 'bf16')")
    try:
        db.execute("select hybrid_search_set_model(%s)", [str(target)])
        assert db.execute("select vector_dims(embed_dense('bf16 weights'))").fetchone() == (32,)
        assert db.execute("select model from hybrid_search_model_stats()").fetchone() == (
            str(target),
        )
    finally:
        db.execute("select hybrid_search_configure(dtype => 'fp32')")
        db.execute("select hybrid_search_set_model(%s)", [str(model_dir)])
