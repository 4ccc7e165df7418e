"""The pg_regress tests in extension/test (the sparse_inverted index access method,
and api: every public function's result shape and argument errors) against the
suite's server, as `make -C extension installcheck`."""

import os
import subprocess
from pathlib import Path

EXTENSION = Path(__file__).resolve().parent.parent / "extension"


def test_pg_regress(cluster, dsn, layout, model_dir):
    # dsn: the extension's files are installed and the server is up
    env = {
        **os.environ,
        "HYBRID_SEARCH_VENV": str(layout.venv),
        "HYBRID_SEARCH_TEST_MODEL": str(model_dir),
        "PGHOST": str(cluster.socket_dir),
        "PGPORT": str(cluster.port),
        "PGUSER": "postgres",
    }
    run = subprocess.run(
        ["make", "-s", "-C", EXTENSION, "installcheck"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    diffs = EXTENSION / "test" / "regression.diffs"
    assert run.returncode == 0, (
        run.stdout + run.stderr + (diffs.read_text() if diffs.exists() else "")
    )
