"""Where hybrid_search keeps things on this machine.

Everything a PostgreSQL backend loads (the PL/Python virtualenv, the models)
and the local cluster live under HYBRID_SEARCH_HOME, never under the
invoking user's home: when we run as root the server runs as `postgres`,
which cannot read /root.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

# The source tree the CLI builds and installs from: the checkout it runs from (a
# clone, an editable install), else the copy a wheel carries as package data (setup.py).
_CHECKOUT = Path(__file__).resolve().parents[2]
REPO = (
    _CHECKOUT
    if (_CHECKOUT / "extension" / "hybrid_search.control").is_file()
    else Path(__file__).resolve().parent / "source"
)
PG_VERSION = os.environ.get("HYBRID_SEARCH_PG_VERSION", "15")
REAL_MODEL_ID = "BAAI/bge-m3"


def _default_home() -> Path:
    if os.geteuid() == 0:
        return Path("/opt/hybrid_search")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "hybrid_search"


@dataclass(frozen=True)
class Layout:
    home: Path

    @classmethod
    def from_environment(cls) -> "Layout":
        return cls(Path(os.environ.get("HYBRID_SEARCH_HOME") or _default_home()))

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def test_model(self) -> Path:
        return self.models / "test-bge-m3"

    @property
    def state_file(self) -> Path:
        """Records the model that `setup` installed, for `start` to configure."""
        return self.home / "model.json"

    @property
    def cluster(self) -> Path:
        return self.home / "cluster"

    @property
    def build(self) -> Path:
        return self.home / "build"

    @property
    def postgres_root(self) -> Path:
        """The root of the private copy of the PostgreSQL installation (server_copy)."""
        return self.home / "postgresql"


def system_pg_bin(version: str = PG_VERSION) -> Path:
    return Path(f"/usr/lib/postgresql/{version}/bin")


def pg_bin() -> Path:
    """The server's programs that our clusters run: those of the private copy under
    HYBRID_SEARCH_HOME, which loads this checkout's extension files (server_copy).
    A home that setup has not made one in yet (one from an older version) has its
    cluster stopped, inspected or started with the system's programs."""
    private = Layout.from_environment().postgres_root / system_pg_bin().relative_to("/")
    return private if private.is_dir() else system_pg_bin()


def pg_config(version: str = PG_VERSION) -> Path:
    """The system's pg_config: builds against the distribution's headers and installs
    next to its server."""
    return system_pg_bin(version) / "pg_config"


def plpython_interpreter(version: str = PG_VERSION) -> Path:
    """The python that PL/Python embeds, read off plpython3.so's libpython."""
    lib = Path(f"/usr/lib/postgresql/{version}/lib/plpython3.so")
    if lib.exists():
        match = re.search(rb"libpython(3\.\d+)", lib.read_bytes())
        if match:
            return Path("/usr/bin/python" + match.group(1).decode())
    return Path("/usr/bin/python3")
