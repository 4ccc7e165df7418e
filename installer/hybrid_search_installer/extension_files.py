"""Build the extension (sql/*.sql -> install script, hybrid_search.c -> the
shared library) and install it with PGXS: into the system's PostgreSQL, for servers
a DBA runs there, and into the private copy under HYBRID_SEARCH_HOME that our own
clusters run (server_copy)."""

import os
from pathlib import Path

from . import report
from .layout import REPO, Layout, pg_config

EXTENSION_DIR = REPO / "extension"


def _stale(root: Path, sharedir: Path, libdir: Path) -> list[str]:
    """Names of the built files that differ from those installed under root."""
    built = [
        (sharedir, EXTENSION_DIR / "hybrid_search.control"),
        *((sharedir, f) for f in EXTENSION_DIR.glob("hybrid_search--*.sql")),
        (libdir, EXTENSION_DIR / "hybrid_search.so"),
    ]
    return [
        f.name
        for target, f in built
        if not (installed := root / target.relative_to("/") / f.name).exists()
        or installed.read_bytes() != f.read_bytes()
    ]


def ensure_extension_files(layout: Layout) -> None:
    make = ["make", "-s", "-C", EXTENSION_DIR, f"PG_CONFIG={pg_config()}"]
    report.run(make)
    sharedir = Path(report.run([pg_config(), "--sharedir"]).stdout.strip()) / "extension"
    libdir = Path(report.run([pg_config(), "--pkglibdir"]).stdout.strip())
    for root, where in ((Path("/"), "the system's PostgreSQL"), (layout.postgres_root, None)):
        where = where or f"the PostgreSQL copy {root}"
        stale = _stale(root, sharedir, libdir)
        if not stale:
            report.done(f"extension files in {where}")
            continue
        target = root / sharedir.relative_to("/")
        if os.geteuid() != 0 and not os.access(target, os.W_OK):
            raise SystemExit(f"hybrid-search: installing into {target} needs root")
        report.changing(f"extension files in {where}: {', '.join(stale)}")
        report.run([*make, "install", *([f"DESTDIR={root}"] if root != Path("/") else [])])
