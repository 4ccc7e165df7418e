"""`hybrid-search eval DIR` on a tiny BEIR-format collection, end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).with_name("hybrid-search")


@pytest.fixture(scope="module")
def collection(scratch, layout, model_dir):
    home = scratch / "eval-home"
    home.mkdir(mode=0o755)
    (home / "venv").symlink_to(layout.venv)
    # the PostgreSQL copy with this checkout's extension files, shared as the venv is
    (home / "postgresql").symlink_to(layout.postgres_root)
    (home / "model.json").write_text(json.dumps({"model": str(model_dir), "kind": "test"}))
    beir = scratch / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {
        "d-vac": ("Vacuum", "vacuum reclaims the space of dead tuples"),
        "d-idx": ("Indexes", "a btree index speeds up reads of a table"),
        "d-wal": ("WAL", "the write-ahead log makes commits durable"),
    }
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in docs.items())
    )
    (beir / "queries.jsonl").write_text(
        json.dumps({"_id": "1", "text": "vacuum dead tuples"})
        + "\n"
        + json.dumps({"_id": "2", "text": "durable commits"})
        + "\n"
    )
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\td-vac\t1\n2\td-wal\t1\n"
    )
    return home, beir


def test_eval_prints_every_leg_and_fusion(collection, scratch):
    home, beir = collection
    saved = scratch / "eval.md"
    env = {**os.environ, "HYBRID_SEARCH_HOME": str(home)}
    result = subprocess.run(
        [CLI, "eval", str(beir), "--k", "2", "--save", str(saved)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    rows = {
        line.split("|")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("| ") and "method" not in line
    }
    assert set(rows) == {
        "dense", "sparse", "keyword", "hybrid weighted", "hybrid rrf", "hybrid raw"
    }  # fmt: skip
    # BM25 puts each query's only relevant document first (string ids were mapped)
    assert rows["keyword"].split("|")[2:] == [" 2 ", " 1.000 ", " 1.000 ", " 1.000 ", ""]
    assert saved.read_text().startswith(f"`hybrid-search eval {beir} --k 2 --save {saved}`")
