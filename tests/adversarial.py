"""What the adversarial tests share: a server of their own without preloading (a crash
there cannot take the rest of the suite down with it), and the watch that tells whether
any backend of a server crashed during a case.

A crashed backend makes the postmaster end every other one and reinitialize: a
connection held open across the case is cut and the checkpointer is a new process.
pg_postmaster_start_time() does not change then, so it is no witness.
"""

import psycopg
import pytest
from helpers import connect, create_database, own_cluster


@pytest.fixture(scope="session")
def bare_cluster(scratch):
    """A server configured without preloading: every backend imports the model stack
    and our module itself, through SQL (the path the preloaded cluster skips)."""
    yield from own_cluster(scratch / "adversarial-cluster", 5438)


@pytest.fixture(scope="session")
def bare_dsn(bare_cluster, layout, model_dir):
    return create_database(bare_cluster, layout, model_dir, "adversarial")


class Watch:
    """A connection held open across cases, and the checkpointer's pid when it opened."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn = connect(dsn)
        self.checkpointer = self._checkpointer()

    def _checkpointer(self) -> int:
        return self.conn.execute(
            "select pid from pg_stat_activity where backend_type = 'checkpointer'"
        ).fetchone()[0]

    def assert_no_crash(self, case: str) -> None:
        try:
            pid = self._checkpointer()
        except psycopg.OperationalError as error:
            raise AssertionError(f"{case}: the server crashed (a held connection was cut)") from (
                error
            )
        assert pid == self.checkpointer, f"{case}: the server crashed (new checkpointer)"

    def assert_check_clean(self, case: str) -> None:
        errors = self.conn.execute(
            "select check_name, detail from hybrid_search_check() where status = 'error'"
        ).fetchall()
        assert errors == [], f"{case}: hybrid_search_check() reports {errors}"

    def close(self) -> None:
        self.conn.close()
