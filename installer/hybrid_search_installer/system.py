"""System packages and pgvector (>= 0.7 for sparsevec).

Debian bookworm has no pgvector package. We take a distribution binary
package when apt offers one (PGDG, newer Debian/Ubuntu), and otherwise build
Debian trixie's source package against the installed server.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

from . import report
from .layout import PG_VERSION, Layout, pg_config, plpython_interpreter

MIN_PGVECTOR = (0, 7)
TRIXIE_SOURCES = Path("/etc/apt/sources.list.d/hybrid-search-trixie-src.sources")
TRIXIE_SOURCES_TEXT = """\
# added by hybrid-search setup: pgvector source package (bookworm has none)
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def required_packages(version: str = PG_VERSION) -> list[str]:
    python = plpython_interpreter(version).name  # e.g. python3.11
    return [
        f"postgresql-{version}",
        f"postgresql-plpython3-{version}",
        f"postgresql-server-dev-{version}",
        # pg_cron, to run the queue's workers on a schedule (README: Queued embedding)
        f"postgresql-{version}-cron",
        f"{python}-venv",
        # hybrid_search.so (the preload library) is compiled against PL/Python's libpython
        f"{python}-dev",
        "gcc",
        "make",
        "ca-certificates",
    ]


# only for building pgvector from source
BUILD_PACKAGES = ["build-essential", "dpkg-dev"]


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() == "install ok installed"


_apt_updated = False


def _apt(*args: str) -> None:
    global _apt_updated
    if os.geteuid() != 0:
        raise SystemExit(f"hybrid-search: apt-get {' '.join(args)} needs root; run setup as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        report.run(["apt-get", "update", "-q"], env=env)
        _apt_updated = True
    report.run(["apt-get", *args], env=env)


def apt_install(*packages: str) -> None:
    _apt("install", "-y", "-q", "--no-install-recommends", *packages)


def ensure_packages() -> None:
    missing = [p for p in required_packages() if not _installed(p)]
    if not missing:
        report.done("system packages: " + ", ".join(required_packages()))
        return
    report.changing("system packages: " + ", ".join(missing))
    _apt("install", "-y", "-q", "--no-install-recommends", *missing)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def installed_pgvector() -> tuple[int, ...] | None:
    sharedir = report.run([pg_config(), "--sharedir"]).stdout.strip()
    control = Path(sharedir) / "extension" / "vector.control"
    if not control.exists():
        return None
    match = re.search(r"default_version\s*=\s*'([^']+)'", control.read_text())
    return _version_tuple(match.group(1)) if match else None


def _binary_candidate(package: str) -> tuple[int, ...] | None:
    result = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, check=False
    )
    match = re.search(r"Candidate:\s*(\S+)", result.stdout)
    if not match or match.group(1) == "(none)":
        return None
    return _version_tuple(match.group(1))


def ensure_pgvector(layout: Layout) -> None:
    version = installed_pgvector()
    if version and version >= MIN_PGVECTOR:
        report.done(f"pgvector {'.'.join(map(str, version))}")
        return
    package = f"postgresql-{PG_VERSION}-pgvector"
    candidate = _binary_candidate(package)
    if candidate and candidate >= MIN_PGVECTOR:
        report.changing(f"pgvector from the distribution package {package}")
        _apt("install", "-y", "-q", package)
        return
    report.changing("pgvector built from Debian trixie's source package")
    _build_pgvector_from_source(layout)


def _build_pgvector_from_source(layout: Layout) -> None:
    global _apt_updated
    if not TRIXIE_SOURCES.exists():
        TRIXIE_SOURCES.write_text(TRIXIE_SOURCES_TEXT)
        _apt_updated = False
    # also runs apt-get update, which reads the new source list
    _apt("install", "-y", "-q", "--no-install-recommends", *BUILD_PACKAGES)
    build = layout.build / "pgvector"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    report.run(["apt-get", "source", "-q", "pgvector"], cwd=build)
    (source,) = [p for p in build.iterdir() if p.is_dir() and p.name.startswith("pgvector-")]
    make = ["make", f"PG_CONFIG={pg_config()}"]
    report.run([*make, f"-j{os.cpu_count() or 1}"], cwd=source)
    report.run([*make, "install"], cwd=source)
    version = installed_pgvector()
    if not version or version < MIN_PGVECTOR:
        raise SystemExit(f"hybrid-search: built pgvector but found version {version} installed")
