"""The virtualenv PL/Python loads torch, FlagEmbedding and our module from.

It is made with the interpreter PL/Python embeds (Debian's python3.x, not
whatever python3 is first on PATH) and found by the extension through
hybrid_search_settings.python_venv, so system site-packages stay untouched.
It holds exactly requirements/plpython.lock (hash-checked) plus our module:
setup compares the two on every run and puts a drifted virtualenv back,
removing packages the lock does not name (transformers imports some optional
ones whenever they are there, costing every embedding backend memory).
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from . import report
from .layout import REPO, Layout, plpython_interpreter

LOCK = REPO / "requirements" / "plpython.lock"
MODULE_SOURCE = REPO / "plpython"
# standard library only: runs in the virtualenv before anything is installed there
DEPENDENCIES_SCRIPT = MODULE_SOURCE / "hybrid_search" / "dependencies.py"
# the copy the server compares the virtualenv with (dependencies.LOCK_NAME)
INSTALLED_LOCK = "hybrid_search-requirements.lock"


def _digest(paths: list[Path], relative_to: Path = REPO) -> str:
    """Digest of files' names and contents, to redo a step only when they changed."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(relative_to)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _replace(path: Path, text: str) -> None:
    """Write path as a new file (a rename), never into the old one: a copy of the
    virtualenv made with hard links shares its files' contents with the original."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.replace(path)


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


def site_packages(layout: Layout) -> Path:
    (site,) = layout.venv.glob("lib/python3*/site-packages")
    return site


def _against_lock(layout: Layout, *flags: str) -> list[str]:
    """dependencies.py's lines for this virtualenv: the drift, or with --extra the
    packages the lock does not name."""
    result = report.run(
        [layout.venv_python, DEPENDENCIES_SCRIPT, LOCK, site_packages(layout), *flags]
    )
    return result.stdout.split("\n") if result.stdout.strip() else []


def ensure_venv(layout: Layout) -> None:
    interpreter = plpython_interpreter()
    pip = [layout.venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not _venv_python_matches(layout, interpreter):
        report.changing(f"PL/Python virtualenv {layout.venv} ({interpreter})")
        shutil.rmtree(layout.venv, ignore_errors=True)
        layout.venv.parent.mkdir(parents=True, exist_ok=True)
        report.run([interpreter, "-m", "venv", layout.venv])

    drift = _against_lock(layout)
    if not drift:
        report.done(f"PL/Python virtualenv {layout.venv}: as {LOCK.relative_to(REPO)}")
    else:
        many = f"{len(drift)} packages to install or change"
        shown = "; ".join(drift) if len(drift) <= 5 else many
        report.changing(f"PL/Python virtualenv {layout.venv} to {LOCK.relative_to(REPO)}: {shown}")
        # where no local CPU wheel is on hand (a Docker build), the CPU index has torch's
        index = os.environ.get("HYBRID_SEARCH_TORCH_INDEX_URL")
        report.run(
            [
                *(*pip, "--require-hashes", "--no-deps", "-r", LOCK),
                *(["--extra-index-url", index] if index else []),
            ]
        )
        extra = _against_lock(layout, "--extra")
        if extra:
            report.run([layout.venv_python, "-m", "pip", "uninstall", "-q", "-y", *extra])
        drift = _against_lock(layout)
        if drift:
            raise SystemExit(
                "hybrid-search: the virtualenv still differs from the lock: " + "; ".join(drift)
            )
        _replace(layout.venv / ".hybrid_search_requirements", _digest([LOCK]))
    _replace(layout.venv / INSTALLED_LOCK, LOCK.read_text())

    digest = _digest(
        [MODULE_SOURCE / "pyproject.toml", *MODULE_SOURCE.glob("hybrid_search*/**/*.py")],
        MODULE_SOURCE,
    )
    stamp = layout.venv / ".hybrid_search_module"
    if _stamp_matches(stamp, digest):
        report.done("hybrid_search Python module (unchanged)")
    else:
        report.changing(f"hybrid_search Python module from {MODULE_SOURCE}")
        # a copy, not an editable install: the server's user must read it, and
        # the checkout may live where it cannot (/root); built with the lock's setuptools.
        # setuptools builds in build/ and keeps what it copied there before, so a module
        # deleted or moved since would be installed again: build afresh.
        shutil.rmtree(MODULE_SOURCE / "build", ignore_errors=True)
        report.run([*pip, "--no-deps", "--no-build-isolation", "--force-reinstall", MODULE_SOURCE])
        _replace(stamp, digest)
