"""A private copy of the PostgreSQL installation under HYBRID_SEARCH_HOME, which the
local cluster, the tests and the benchmarks run.

PostgreSQL finds its share and library directories relative to its own programs, so
a copy of the distribution's bin, lib and share directories (about 50 MB) is a
complete server that loads the extension files installed into the copy, not the
ones in the system's directories. Two checkouts on one machine (two homes) then
never run each other's extension scripts, and whatever another installation left
in the system's directories cannot leak into a test run. `setup` still installs the
extension into the system's directories as well, for servers a DBA runs there.
"""

import hashlib
import shutil
from pathlib import Path

from . import report
from .layout import PG_VERSION, Layout

DIRECTORIES = [
    Path(f"usr/lib/postgresql/{PG_VERSION}/bin"),
    Path(f"usr/lib/postgresql/{PG_VERSION}/lib"),
    Path(f"usr/share/postgresql/{PG_VERSION}"),
]
SYSTEM = Path("/")
STAMP = ".system-digest"


def _ours(directory: str, names: list[str]) -> list[str]:
    """The extension's own files: installed into the copy from this checkout only."""
    return [name for name in names if name.startswith("hybrid_search")]


def _system_digest() -> str:
    """Names, sizes and modification times of the system's files (ours left out): a
    package upgrade or a newly installed extension changes it."""
    digest = hashlib.sha256()
    for directory in DIRECTORIES:
        for path in sorted((SYSTEM / directory).rglob("*")):
            # ours at any depth: lib/bitcode/hybrid_search/*.bc too (sparse_build.bc...)
            ours = any(p.startswith("hybrid_search") for p in path.relative_to(SYSTEM).parts)
            if ours or not path.is_file():
                continue
            status = path.stat()
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def ensure(layout: Layout) -> None:
    root, digest = layout.postgres_root, _system_digest()
    stamp = root / STAMP
    if stamp.exists() and stamp.read_text() == digest:
        report.done(f"PostgreSQL copy {root}")
        return
    report.changing(f"PostgreSQL copy {root} (bin, lib, share of the system's server)")
    shutil.rmtree(root, ignore_errors=True)
    for directory in DIRECTORIES:
        shutil.copytree(SYSTEM / directory, root / directory, symlinks=True, ignore=_ours)
    stamp.write_text(digest)
