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
import statistics
from pathlib import Path

import psycopg
from builds import LEGS, cpu_per_query, installed_library
from corpus import Corpus
from hybrid_search_installer.cluster import Cluster
from psycopg import sql
from psycopg.types.json import Jsonb
from retrieval import TENANT, K, dense_leg, hybrid_leg

RESTART_LEGS = {
    "dense": (dense_leg, None),
    **LEGS,
    "hybrid_search, 10% filter": (hybrid_leg, TENANT),
}


def settings_of(config: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in config.split(",") if item]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--config {config!r}: expected name=value[,name=value]")
    return dict(pairs)


def apply(dsn: str, cluster: Cluster, settings: dict[str, str], reset: bool = False) -> None:
    """The settings (or their reset) through ALTER SYSTEM, a restart, then the
    table and its indexes read into shared buffers."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in settings.items():
            statement = "alter system reset {}" if reset else "alter system set {} = {}"
            conn.execute(sql.SQL(statement).format(sql.Identifier(name), sql.Literal(value)))
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
    parser.add_argument("--dsn", required=True, help="a cluster retrieval.py kept (--keep)")
    parser.add_argument("--docs", type=int, default=100_000, help="the kept cluster's corpus")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=K, help="rows each query asks for")
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help="name=value[,name=value] set by ALTER SYSTEM; repeat for each configuration",
    )
    args = parser.parse_args()
    if args.queries < 2:
        parser.error("--queries: at least 2 (a p95 needs two queries)")
    configs = [settings_of(c) for c in args.config]
    with psycopg.connect(args.dsn) as conn:
        data = Path(conn.execute("show data_directory").fetchone()[0])
        port = int(conn.execute("show port").fetchone()[0])
    cluster = Cluster(data.parent, port=port)
    corpus = Corpus(args.docs, args.queries)
    library = installed_library()
    cpu = {(name, c): [] for name in RESTART_LEGS for c in args.config}
    same = {(name, c): True for name in RESTART_LEGS for c in args.config}
    reference = {}  # each leg's rows under the first configuration
    try:
        for _ in range(args.rounds):
            for config, settings in zip(args.config, configs, strict=True):
                apply(args.dsn, cluster, settings)
                for name, (leg, tenant) in RESTART_LEGS.items():
                    query, params = leg(
                        corpus, args.k, Jsonb({"tenant": tenant}) if tenant else None
                    )
                    mean, p95, rows = cpu_per_query(
                        args.dsn, query, [params(q) for q in range(args.queries)], "", library
                    )
                    cpu[name, config].append((mean, p95))
                    same[name, config] &= rows == reference.setdefault(name, rows)
    finally:
        apply(args.dsn, cluster, {name: "" for s in configs for name in s}, reset=True)
    print(f"| leg | {' | '.join(args.config)} |")
    print(f"|---|{'---|' * len(args.config)}")
    for name in RESTART_LEGS:
        cells = [
            " / ".join(f"{statistics.median(m):.2f}" for m in zip(*cpu[name, c], strict=True))
            + ("" if same[name, c] else " (other rows)")
            for c in args.config
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    print(
        f"\nbackend CPU ms per query (k = {args.k}), mean / p95, medians of {args.rounds}"
        f" rounds of {args.queries} queries, each after a restart and pg_prewarm"
    )


if __name__ == "__main__":
    main()
