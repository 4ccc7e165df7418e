"""A coordinator and its shards (docs/sharding.md): every shard is a complete
hybrid_search database; the coordinator has the extension in schema
hybrid_search (for the query's embedding and the fan-out) and, in public, the
`documents` table writers use, whose partitions are the shards' documents
tables. `hybrid-search shards start` makes one on this machine with a cluster
per server; coordinate() is what a DBA runs against real servers too."""

from dataclasses import dataclass

import psycopg
from psycopg import sql

from . import database, report
from .cluster import SUPERUSER, Cluster
from .layout import Layout

DATABASE = "hybrid_search"
COORDINATOR_SCHEMA = "hybrid_search"


@dataclass(frozen=True)
class Shard:
    """A shard as the coordinator reaches it (a postgres_fdw server of that name)."""

    name: str
    host: str
    port: int
    dbname: str
    user: str = SUPERUSER


def shard_database(dsn: str, layout: Layout, model: str | None) -> None:
    """A shard: a plain hybrid_search database."""
    database.ensure_extension(dsn, layout, model)


def coordinator_database(dsn: str, layout: Layout, model: str | None) -> None:
    """The extension in its own schema (public keeps the routing table named
    documents), on every role's search_path after public."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute(
            "select 1 from pg_extension where extname = 'hybrid_search'"
        ).fetchone():
            report.changing(f"extension hybrid_search in schema {COORDINATOR_SCHEMA}")
            conn.execute("create extension if not exists vector")
            conn.execute(
                sql.SQL("create schema if not exists {}").format(sql.Identifier(COORDINATOR_SCHEMA))
            )
            conn.execute(
                sql.SQL("create extension hybrid_search schema {} cascade").format(
                    sql.Identifier(COORDINATOR_SCHEMA)
                )
            )
        dbname = conn.info.dbname
        conn.execute(
            sql.SQL('alter database {} set search_path to "$user", public, {}').format(
                sql.Identifier(dbname), sql.Identifier(COORDINATOR_SCHEMA)
            )
        )
    # the extension's own tables first: documents is public's routing table
    database.ensure_extension(
        f"{dsn} options='-csearch_path={COORDINATOR_SCHEMA},public'", layout, model
    )


def add_servers(conn: psycopg.Connection, shards: list[Shard]) -> None:
    """A postgres_fdw server and the current user's mapping for each shard not yet one."""
    conn.execute("create extension if not exists postgres_fdw")
    for shard in shards:
        name = sql.Identifier(shard.name)
        if conn.execute(
            "select 1 from pg_foreign_server where srvname = %s", [shard.name]
        ).fetchone():
            continue
        conn.execute(
            sql.SQL(
                "create server {} foreign data wrapper postgres_fdw"
                " options (host {}, port {}, dbname {})"
            ).format(
                name,
                sql.Literal(shard.host),
                sql.Literal(str(shard.port)),
                sql.Literal(shard.dbname),
            )
        )
        conn.execute(
            sql.SQL("create user mapping for current_user server {} options (user {})").format(
                name, sql.Literal(shard.user)
            )
        )


def coordinate(dsn: str, shards: list[Shard], shard_key: str | None = None) -> list[str]:
    """Foreign servers and user mappings for shards, then
    hybrid_search_coordinator_create; returns the statements it ran."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        add_servers(conn, shards)
        rows = conn.execute(
            "select * from hybrid_search.hybrid_search_coordinator_create(%s, %s)",
            [[s.name for s in shards], shard_key],
        ).fetchall()
    return [r[0] for r in rows]


def add_shard(dsn: str, shard: Shard) -> tuple[str, int, int]:
    """Adds shard by splitting the shard with the largest partition (copy, then
    prune: two transactions, each writing to one shard). Returns the shard
    split and the rows copied and pruned."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        add_servers(conn, [shard])
        (split,) = conn.execute(
            "select name from hybrid_search.hybrid_search_shards"
            " order by modulus, remainder limit 1"
        ).fetchone()
        (copied,) = conn.execute(
            "select hybrid_search.hybrid_search_coordinator_split(%s, %s)", [split, shard.name]
        ).fetchone()
        (pruned,) = conn.execute(
            "select hybrid_search.hybrid_search_coordinator_prune(%s)", [split]
        ).fetchone()
    return split, copied, pruned


def local_clusters(layout: Layout, shards: int, base_port: int) -> tuple[Cluster, list[Cluster]]:
    """The coordinator's and the shards' clusters under HYBRID_SEARCH_HOME/shards."""
    root = layout.home / "shards"
    coordinator = Cluster(root / "coordinator", port=base_port)
    return coordinator, [
        Cluster(root / f"shard_{i}", port=base_port + i) for i in range(1, shards + 1)
    ]


def start_local(
    layout: Layout,
    shards: int,
    base_port: int,
    model: str | None,
    shard_key: str | None = None,
    clusters: tuple[Cluster, list[Cluster]] | None = None,
) -> Cluster:
    """Starts (creating on first use) a coordinator and shards on this machine."""
    coordinator, shard_clusters = clusters or local_clusters(layout, shards, base_port)
    for cluster in (coordinator, *shard_clusters):
        (report.changing if cluster.init() else report.done)(f"cluster {cluster.data}")
        cluster.preload(layout.venv)
        (report.changing if cluster.start() else report.done)(f"server on port {cluster.port}")
    for cluster in shard_clusters:
        database.ensure_database(cluster.dsn(), DATABASE)
        shard_database(cluster.dsn(DATABASE), layout, model)
    database.ensure_database(coordinator.dsn(), DATABASE)
    coordinator_database(coordinator.dsn(DATABASE), layout, model)
    with psycopg.connect(coordinator.dsn(DATABASE), autocommit=True) as conn:
        coordinating = conn.execute(
            "select exists (select from hybrid_search.hybrid_search_coordinator)"
        ).fetchone()[0]
    shard_list = [
        Shard(f"shard_{i}", str(c.socket_dir), c.port, DATABASE)
        for i, c in enumerate(shard_clusters, start=1)
    ]
    if not coordinating:
        for statement in coordinate(coordinator.dsn(DATABASE), shard_list, shard_key):
            report.changing(statement)
        return coordinator
    with psycopg.connect(coordinator.dsn(DATABASE), autocommit=True) as conn:
        known = {n for (n,) in conn.execute("select name from hybrid_search.hybrid_search_shards")}
    report.done(f"coordinator of {', '.join(sorted(known))}")
    for shard in shard_list:
        if shard.name not in known:
            split, copied, pruned = add_shard(coordinator.dsn(DATABASE), shard)
            report.changing(
                f"{shard.name} added: {copied} rows copied from {split}, {pruned} pruned there"
            )
    return coordinator
