"""Backend CPU per query under two or more server configurations that take a
restart (huge_pages, shared_buffers), in alternating rounds on one kept cluster.

builds.py compares libraries and settings a session can change; this compares
what only a restart changes. Each round, for each configuration in turn, it sets
the configuration with ALTER SYSTEM, restarts the cluster, reads the table and
its indexes into shared buffers (pg_prewarm), and times every leg as builds.py
does (a new connection, 5 untimed queries, then the backend's time on a CPU
around each of the timed ones, from /proc/<pid>/schedstat). It prints, per leg
and configuration, the medians over the rounds of the mean and the p95, and
whether each configuration returned the first one's rows. At the end the
settings it changed are reset and the cluster restarted.

    sysctl -w vm.nr_hugepages=1100     # as root, for --config huge_pages=on at 2GB
    .venv/bin/python bench/retrieval.py --docs 100000 --fusion-only --keep
    .venv/bin/python bench/restarts.py --dsn "<the kept dsn>" \\
        --config huge_pages=off,shared_buffers=2GB --config huge_pages=on,shared_buffers=2GB
"""

import argparse
from pathlib import Path

import psycopg
from builds import LEGS, Comparison, installed_library, parse_kept_cluster_arguments
from hybrid_search_installer.cluster import Cluster
from psycopg import sql
from retrieval import TENANT, dense_leg, hybrid_leg

RESTART_LEGS = {
    "dense": (dense_leg, None),
    **LEGS,
    "hybrid_search, 10% filter": (hybrid_leg, {"tenant": TENANT}),
}


def settings_of(config: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in config.split(",") if item]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--config {config!r}: expected name=value[,name=value]")
    return dict(pairs)


def alter_system(dsn: str, settings: dict[str, str | None]) -> None:
    """ALTER SYSTEM SET each setting (RESET where its value is None)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in settings.items():
            statement = "alter system reset {}" if value is None else "alter system set {} = {}"
            conn.execute(sql.SQL(statement).format(sql.Identifier(name), sql.Literal(value)))


def restart_warm(dsn: str, cluster: Cluster) -> None:
    """A restart, then the table and its indexes read into shared buffers."""
    cluster.restart()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_prewarm")
        # the table first: where it outgrows shared buffers, the indexes read after it stay
        conn.execute("select pg_prewarm('documents')")
        conn.execute(
            "select pg_prewarm(indexrelid) from pg_index where indrelid = 'documents'::regclass"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help="name=value[,name=value] set by ALTER SYSTEM; repeat for each configuration",
    )
    args = parse_kept_cluster_arguments(parser, rounds=3)
    configs = [settings_of(c) for c in args.config]
    with psycopg.connect(args.dsn) as conn:
        data = Path(conn.execute("show data_directory").fetchone()[0])
        port = int(conn.execute("show port").fetchone()[0])
    cluster = Cluster(data.parent, port=port)
    comparison = Comparison(RESTART_LEGS, args.config, args)
    library = installed_library()
    try:
        for _ in range(args.rounds):
            for config, settings in zip(args.config, configs, strict=True):
                alter_system(args.dsn, settings)
                restart_warm(args.dsn, cluster)
                comparison.time_legs(config, "", library)
    finally:
        alter_system(args.dsn, dict.fromkeys(name for s in configs for name in s))
        cluster.restart()
    comparison.print(args.config, ", each after a restart and pg_prewarm")


if __name__ == "__main__":
    main()
