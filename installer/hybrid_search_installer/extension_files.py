"""Build the extension (sql/*.sql -> install script, hybrid_search.c -> the
preload library) and install it with PGXS."""

import os
from pathlib import Path

from . import report
from .layout import REPO, pg_config

EXTENSION_DIR = REPO / "extension"


def ensure_extension_files() -> None:
    make = ["make", "-s", "-C", EXTENSION_DIR, f"PG_CONFIG={pg_config()}"]
    report.run(make)
    sharedir = Path(report.run([pg_config(), "--sharedir"]).stdout.strip()) / "extension"
    libdir = Path(report.run([pg_config(), "--pkglibdir"]).stdout.strip())
    built = [
        (sharedir, EXTENSION_DIR / "hybrid_search.control"),
        *((sharedir, f) for f in EXTENSION_DIR.glob("hybrid_search--*.sql")),
        (libdir, EXTENSION_DIR / "hybrid_search.so"),
    ]
    stale = [
        f.name
        for target, f in built
        if not (target / f.name).exists() or (target / f.name).read_bytes() != f.read_bytes()
    ]
    if not stale:
        report.done(f"extension files in {sharedir} and {libdir}")
        return
    if os.geteuid() != 0 and not os.access(sharedir, os.W_OK):
        raise SystemExit(f"hybrid-search: installing into {sharedir} needs root")
    report.changing(f"extension files: {', '.join(stale)}")
    report.run([*make, "install"])
