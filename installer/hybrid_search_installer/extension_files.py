"""Build the extension (sql/*.sql -> install script) and install it with PGXS."""

import os
from pathlib import Path

from . import report
from .layout import REPO, pg_config

EXTENSION_DIR = REPO / "extension"


def ensure_extension_files() -> None:
    make = ["make", "-s", "-C", EXTENSION_DIR, f"PG_CONFIG={pg_config()}"]
    report.run(make)
    sharedir = Path(report.run([pg_config(), "--sharedir"]).stdout.strip()) / "extension"
    built = [EXTENSION_DIR / "hybrid_search.control", *EXTENSION_DIR.glob("hybrid_search--*.sql")]
    stale = [
        f.name
        for f in built
        if not (sharedir / f.name).exists() or (sharedir / f.name).read_bytes() != f.read_bytes()
    ]
    if not stale:
        report.done(f"extension files in {sharedir}")
        return
    if os.geteuid() != 0 and not os.access(sharedir, os.W_OK):
        raise SystemExit(f"hybrid-search: installing into {sharedir} needs root")
    report.changing(f"extension files: {', '.join(stale)}")
    report.run([*make, "install"])
