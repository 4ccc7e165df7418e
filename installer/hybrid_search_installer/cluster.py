"""A PostgreSQL cluster of our own: initdb in a directory, a private socket
directory (no TCP), started and stopped with pg_ctl.

initdb and postgres refuse to run as root, so as root they run as the
`postgres` OS user, which then owns the cluster directory.
"""

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .layout import pg_bin

SERVER_USER = "postgres"
SUPERUSER = "postgres"


def _demote() -> dict:
    """subprocess arguments that run a command as the server's OS user when we are root."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(SERVER_USER)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/"}


@dataclass(frozen=True)
class Cluster:
    directory: Path
    port: int = 54329

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "run"

    @property
    def log(self) -> Path:
        return self.directory / "postgresql.log"

    def dsn(self, dbname: str = "hybrid_search") -> str:
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def _run(self, *cmd, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, check=False, **_demote()
        )
        if check and result.returncode != 0:
            raise SystemExit(
                f"hybrid-search: {Path(str(cmd[0])).name} failed:\n{result.stdout}{result.stderr}"
                + (self.log.read_text()[-3000:] if self.log.exists() else "")
            )
        return result

    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def _make_private_directories(self) -> None:
        """The cluster and socket directories, for the server's OS user only."""
        for path in (self.directory, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
            if os.geteuid() == 0:
                shutil.chown(path, SERVER_USER, SERVER_USER)

    def configure(self, settings: dict[str, str], heading: str = "added settings") -> None:
        """Append settings to postgresql.conf (values as written there, quotes included;
        the last setting of a name wins); they take effect at the next start."""
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# {heading}\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def init(self) -> bool:
        """initdb if needed; True if it ran."""
        if self.initialized:
            return False
        self._make_private_directories()
        self._run(
            pg_bin() / "initdb",
            "-D",
            self.data,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        # only the socket, only for the owner (and root): trust is safe there
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "port": str(self.port),
            "logging_collector": "off",
        }
        self.configure(settings, "hybrid-search local cluster")
        return True

    def setting(self, name: str) -> str:
        """A setting as postgresql.conf and its includes give it (postgres -C)."""
        return self._run(pg_bin() / "postgres", "-D", self.data, "-C", name).stdout.strip()

    def preload(self, venv: Path) -> bool:
        """Have the postmaster import the model stack from venv once, for all
        backends (hybrid_search.so; README: Preloading). True if postgresql.conf
        changed: it takes effect at the next start."""
        if "hybrid_search.preload_venv" in (self.data / "postgresql.conf").read_text():
            return False
        # added to what is preloaded already (pg_cron, say), never in its place
        listed = self.setting("shared_preload_libraries").split(",")
        libraries = [name.strip() for name in listed if name.strip()]
        libraries += [] if "hybrid_search" in libraries else ["hybrid_search"]
        settings = {
            "shared_preload_libraries": "'" + ", ".join(libraries) + "'",
            "hybrid_search.preload_venv": f"'{venv}'",
        }
        self.configure(settings, "hybrid-search: preload the model stack")
        return True

    def init_standby(self, primary: "Cluster") -> bool:
        """A streaming hot standby of primary (pg_basebackup -R) if there is none yet;
        True if it was created. It streams over primary's socket, so both run here."""
        if self.initialized:
            return False
        self._make_private_directories()
        self._run(
            pg_bin() / "pg_basebackup",
            "-D",
            self.data,
            "-d",
            f"host={primary.socket_dir} port={primary.port} user={SUPERUSER}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        )
        # postgresql.conf came from the primary: the last setting of a name wins
        settings = {
            "unix_socket_directories": f"'{self.socket_dir}'",
            "port": str(self.port),
            "hot_standby": "on",
        }
        self.configure(settings, f"hybrid-search standby of {primary.data}")
        return True

    @property
    def running(self) -> bool:
        if not self.initialized:
            return False
        return (
            self._run(pg_bin() / "pg_ctl", "-D", self.data, "status", check=False).returncode == 0
        )

    def start(self) -> bool:
        """Start if not running; True if it was started."""
        if self.running:
            return False
        self._run(pg_bin() / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "120", "start")
        return True

    @property
    def started_at(self) -> float:
        """When the running postmaster started (the third line of postmaster.pid)."""
        return float((self.data / "postmaster.pid").read_text().splitlines()[2])

    def restart(self) -> None:
        self._run(
            pg_bin() / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "120", "restart"
        )

    def stop(self, mode: str = "fast") -> bool:
        if not self.running:
            return False
        self._run(pg_bin() / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
        return True

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
