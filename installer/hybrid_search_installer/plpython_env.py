"""The virtualenv PL/Python loads torch, FlagEmbedding and our module from.

It is made with the interpreter PL/Python embeds (Debian's python3.x, not
whatever python3 is first on PATH) and found by the extension through
hybrid_search_settings.python_venv, so system site-packages stay untouched.
Stamp files make a second `setup` a no-op. When the requirements change,
the virtualenv is made anew: packages no longer required would otherwise
stay, and transformers imports some optional ones whenever they are there,
costing every embedding backend private memory.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from . import report
from .layout import FLAGEMBEDDING_REQUIREMENT, REPO, TORCH_REQUIREMENT, Layout, plpython_interpreter

# torch first and pinned: the local CPU wheel, not gigabytes of CUDA packages
REQUIREMENTS = [TORCH_REQUIREMENT, FLAGEMBEDDING_REQUIREMENT]


def _source_digest(directory: Path) -> str:
    """Digest of the module's sources, to reinstall only when they changed."""
    digest = hashlib.sha256()
    for path in sorted([directory / "pyproject.toml", *directory.glob("hybrid_search/**/*.py")]):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _stamp_matches(stamp: Path, value: str) -> bool:
    return stamp.exists() and stamp.read_text() == value


def _venv_python_matches(layout: Layout, interpreter: Path) -> bool:
    if not layout.venv_python.exists():
        return False
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    ours = subprocess.run([layout.venv_python, "-c", probe], capture_output=True, text=True)
    theirs = subprocess.run([interpreter, "-c", probe], capture_output=True, text=True)
    return ours.returncode == 0 and ours.stdout == theirs.stdout


def changed_since(layout: Layout, moment: float) -> bool:
    """Were the virtualenv's packages installed after moment (a time stamp)?"""
    stamp = layout.venv / ".hybrid_search_requirements"
    return stamp.exists() and stamp.stat().st_mtime > moment


def ensure_venv(layout: Layout) -> None:
    interpreter = plpython_interpreter()
    pip = [layout.venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    requirements = "\n".join(REQUIREMENTS)
    stamp = layout.venv / ".hybrid_search_requirements"
    stale = stamp.exists() and not _stamp_matches(stamp, requirements)
    if stale or not _venv_python_matches(layout, interpreter):
        report.changing(f"PL/Python virtualenv {layout.venv} ({interpreter})")
        shutil.rmtree(layout.venv, ignore_errors=True)
        layout.venv.parent.mkdir(parents=True, exist_ok=True)
        report.run([interpreter, "-m", "venv", layout.venv])

    if _stamp_matches(stamp, requirements):
        report.done(f"PL/Python virtualenv {layout.venv}: {', '.join(REQUIREMENTS)}")
    else:
        report.changing(f"into {layout.venv}: {', '.join(REQUIREMENTS)}")
        # where no local CPU wheel is on hand (a Docker build), a CPU-only index
        # keeps pip from pulling the CUDA build
        index = os.environ.get("HYBRID_SEARCH_TORCH_INDEX_URL")
        report.run([*pip, *(["--index-url", index] if index else []), TORCH_REQUIREMENT])
        report.run([*pip, *REQUIREMENTS])
        stamp.write_text(requirements)

    source = REPO / "plpython"
    digest = _source_digest(source)
    stamp = layout.venv / ".hybrid_search_module"
    if _stamp_matches(stamp, digest):
        report.done("hybrid_search Python module (unchanged)")
    else:
        report.changing(f"hybrid_search Python module from {source}")
        # a copy, not an editable install: the server's user must read it, and
        # the checkout may live where it cannot (/root)
        report.run([*pip, "--no-deps", "--force-reinstall", source])
        stamp.write_text(digest)
