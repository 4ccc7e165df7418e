"""The PL/Python virtualenv holds exactly requirements/plpython.lock: setup installs
it, hybrid_search_check() compares the two, and setup repairs what drifted."""

import subprocess

from helpers import connect, create_database
from hybrid_search import dependencies
from hybrid_search_installer import plpython_env
from hybrid_search_installer.layout import Layout

LOCK = """\
torch==2.13.0+cpu \\
    --hash=sha256:00
    # via -r plpython.in
Flag_Embedding[extra]==1.4.2 \\
    --hash=sha256:01
tqdm==4.70.1
"""


def dist_info(site, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_drift_names_every_difference(tmp_path):
    assert dependencies.locked(LOCK) == {
        "torch": "2.13.0+cpu",
        "flag-embedding": "1.4.2",
        "tqdm": "4.70.1",
    }
    dist_info(tmp_path, "torch", "2.13.0+cpu")
    dist_info(tmp_path, "flag_embedding", "1.4.1")
    dist_info(tmp_path, "pyarrow", "26.0.1")
    dist_info(tmp_path, "pip", "23.0.1")  # pip and our module are not in the lock
    dist_info(tmp_path, "hybrid_search_plpython", "0.2.0")
    assert dependencies.drift(LOCK, tmp_path) == [
        "flag-embedding: locked 1.4.2, installed 1.4.1",
        "pyarrow: 26.0.1 installed, not in the lock",
        "tqdm: locked 4.70.1, not installed",
    ]
    assert dependencies.extra(LOCK, tmp_path) == ["pyarrow"]


def dependencies_check(conn) -> tuple[str, str]:
    return conn.execute(
        "select status, detail from hybrid_search_check() where check_name = 'dependencies'"
    ).fetchone()


def test_setup_leaves_the_virtualenv_as_locked(conn):
    status, detail = dependencies_check(conn)
    assert status == "ok", detail


def test_a_drifted_virtualenv_is_named_by_the_check_and_repaired_by_setup(
    scratch, cluster, layout, model_dir
):
    home = scratch / "drift-home"
    home.mkdir()
    # a copy of the tested virtualenv (hard links: pip replaces files, never edits them)
    subprocess.run(["cp", "-al", layout.venv, home / "venv"], check=True)
    copy = Layout(home)
    locked_tqdm = dependencies.locked(plpython_env.LOCK.read_text())["tqdm"]
    subprocess.run(
        [copy.venv_python, "-m", "pip", "install", "-q", "--no-deps", "tqdm==4.66.4"],
        check=True,
    )
    dsn = create_database(cluster, layout, model_dir, "drift")
    with connect(dsn) as conn:
        conn.execute("select hybrid_search_configure(python_venv => %s)", [str(copy.venv)])
    with connect(dsn) as conn:
        status, detail = dependencies_check(conn)
        assert status == "error"
        assert f"tqdm: locked {locked_tqdm}, installed 4.66.4" in detail

    plpython_env.ensure_venv(copy)

    with connect(dsn) as conn:
        assert dependencies_check(conn)[0] == "ok"
    installed = dependencies.installed(plpython_env.site_packages(copy))
    assert installed["tqdm"] == locked_tqdm
