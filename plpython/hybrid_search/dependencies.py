"""Does the PL/Python virtualenv hold exactly the packages its lock names?

`hybrid-search setup` installs requirements/plpython.lock into the virtualenv
and keeps a copy there (LOCK_NAME), so that the server can compare what it
runs with what was tested (hybrid_search_check()) and setup can repair a
virtualenv that drifted. Standard library only: setup runs this file as a
script before anything is installed.
"""

import importlib.metadata
import re
import sys
from pathlib import Path

LOCK_NAME = "hybrid_search-requirements.lock"
# installed besides the lock: pip itself and our own module (installed without dependencies)
NOT_LOCKED = {"pip", "hybrid-search-plpython"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock_text: str) -> dict[str, str]:
    """{name: version} of every `name==version` line of a pip-compile lock."""
    pins = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def installed(site_packages: Path) -> dict[str, str]:
    return {
        canonical(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=[str(site_packages)])
    }


def drift(lock_text: str, site_packages: Path) -> list[str]:
    """One line per package whose installed version differs from the lock."""
    want, have = locked(lock_text), installed(site_packages)
    lines = []
    for name in sorted((want.keys() | have.keys()) - NOT_LOCKED):
        if name not in have:
            lines.append(f"{name}: locked {want[name]}, not installed")
        elif name not in want:
            lines.append(f"{name}: {have[name]} installed, not in the lock")
        elif have[name] != want[name]:
            lines.append(f"{name}: locked {want[name]}, installed {have[name]}")
    return lines


def extra(lock_text: str, site_packages: Path) -> list[str]:
    """Installed packages the lock does not name."""
    return sorted(installed(site_packages).keys() - locked(lock_text).keys() - NOT_LOCKED)


if __name__ == "__main__":
    # dependencies.py LOCK SITE_PACKAGES [--extra]: the drift (or the extra packages), a line each
    lock, site = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
    found = extra(lock, site) if sys.argv[3:] == ["--extra"] else drift(lock, site)
    print("\n".join(found))
