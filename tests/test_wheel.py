"""The CLI installed from a wheel, not run from a clone (issue 17): the wheel
carries the source tree as package data (setup.py), layout.REPO finds it there,
the extension's install script builds from it exactly as from the checkout, and
every version is the control file's."""

import re
import subprocess
import sys
from pathlib import Path

import hybrid_search
import hybrid_search_installer
import pytest
from hybrid_search_installer import layout

REPO = Path(__file__).resolve().parent.parent
CONTROL = REPO / "extension" / "hybrid_search.control"
VERSION = re.search(r"^default_version = '([^']+)'$", CONTROL.read_text(), re.MULTILINE)[1]
PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]


def _run(*command, **kwargs) -> str:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=True, **kwargs
    ).stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the CLI's locked dependencies and our wheel, nothing else."""
    scratch = tmp_path_factory.mktemp("wheel")
    # what an earlier build left in build/ (a file renamed since) does not ship
    stale = REPO / "build" / "lib" / "hybrid_search_installer" / "source" / "sql" / "000_old.sql"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("select 1;\n")
    _run(*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", scratch, REPO)
    (wheel,) = scratch.glob(f"hybrid_search-{VERSION}-*.whl")
    venv = scratch / "venv"
    _run(sys.executable, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run(*pip, "--require-hashes", "--no-deps", "-r", REPO / "requirements" / "cli.lock")
    _run(*pip, "--no-deps", wheel)
    return venv


def _in_venv(venv: Path, code: str) -> str:
    return _run(venv / "bin" / "python", "-c", code, cwd=venv).strip()


def test_help(venv):
    assert "setup" in _run(venv / "bin" / "hybrid-search", "--help", cwd=venv)


def test_the_source_tree_is_package_data(venv):
    source = Path(_in_venv(venv, "from hybrid_search_installer.layout import REPO; print(REPO)"))
    assert source.is_relative_to(venv) and source.name == "source"
    assert not (source / "sql" / "000_old.sql").exists()
    checks = _in_venv(
        venv,
        "from hybrid_search_installer import extension_files as e, plpython_env as p, demo;"
        "print(all(f.is_file() for f in (e.EXTENSION_DIR / 'hybrid_search.c', p.LOCK,"
        " p.DEPENDENCIES_SCRIPT, p.MODULE_SOURCE / 'pyproject.toml', demo.CORPUS)))",
    )
    assert checks == "True"


def test_the_install_script_builds_from_the_wheel_as_from_the_checkout(venv, tmp_path):
    source = Path(_in_venv(venv, "from hybrid_search_installer.layout import REPO; print(REPO)"))
    pg_config = f"PG_CONFIG={layout.pg_config()}"
    script = f"hybrid_search--{VERSION}.sql"
    _run("make", "-s", "-C", source / "extension", pg_config, script)
    checkout = tmp_path / script
    _run("make", "-s", "-C", REPO / "extension", pg_config, script)
    checkout.write_bytes((REPO / "extension" / script).read_bytes())
    assert (source / "extension" / script).read_bytes() == checkout.read_bytes()


def test_every_version_is_the_control_files(venv):
    assert _in_venv(venv, "import hybrid_search_installer as h; print(h.__version__)") == VERSION
    assert hybrid_search_installer.__version__ == VERSION
    assert hybrid_search.__version__ == VERSION
