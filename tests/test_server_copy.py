"""Our clusters run the private copy of PostgreSQL under HYBRID_SEARCH_HOME, which
holds this checkout's extension files, whatever the system's directories hold."""

import os
from pathlib import Path

from hybrid_search_installer import server_copy
from hybrid_search_installer.layout import PG_VERSION


def test_the_cluster_runs_the_private_copy(cluster, layout, conn):
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    program = Path(os.readlink(f"/proc/{postmaster}/exe"))
    assert program.is_relative_to(layout.postgres_root)
    library = conn.execute(
        "select setting from pg_settings where name = 'dynamic_library_path'"
    ).fetchone()[0]
    assert library == "$libdir"  # which the copy resolves inside itself
    control = (
        layout.postgres_root / f"usr/share/postgresql/{PG_VERSION}/extension/hybrid_search.control"
    )
    installed = conn.execute(
        "select default_version from pg_available_extensions where name = 'hybrid_search'"
    ).fetchone()[0]
    assert f"default_version = '{installed}'" in control.read_text()


def test_the_copy_leaves_out_every_hybrid_search_file_of_the_system():
    names = ["hybrid_search.so", "hybrid_search--0.2.0.sql", "vector.so", "plpython3.so"]
    assert server_copy._ours("lib", names) == ["hybrid_search.so", "hybrid_search--0.2.0.sql"]
