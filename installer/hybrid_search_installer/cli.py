"""`hybrid-search`: install, run and try hybrid_search on this machine."""

import argparse
import os
import sys
import time

from . import database, demo, extension_files, models, plpython_env, report, system
from .cluster import Cluster
from .layout import Layout

DATABASE = "hybrid_search"


def local_cluster(layout: Layout) -> Cluster:
    return Cluster(layout.cluster, port=int(os.environ.get("HYBRID_SEARCH_PORT", "54329")))


def cmd_setup(args, layout: Layout) -> None:
    started = time.monotonic()
    print(f"hybrid-search setup (home {layout.home})")
    layout.home.mkdir(parents=True, exist_ok=True)
    system.ensure_packages()
    system.ensure_pgvector(layout)
    plpython_env.ensure_venv(layout)
    extension_files.ensure_extension_files()
    record = models.ensure_model(layout, args.model, args.test_model)
    print(f"setup finished in {time.monotonic() - started:.1f} s; model: {record['model']}")


def cmd_start(args, layout: Layout) -> None:
    cluster = local_cluster(layout)
    model = models.installed_model(layout)["model"]
    (report.changing if cluster.init() else report.done)(f"cluster {cluster.data}")
    (report.changing if cluster.start() else report.done)(f"server running ({cluster.socket_dir})")
    database.ensure_database(cluster.dsn(), DATABASE)
    database.ensure_extension(cluster.dsn(DATABASE), layout, model)
    print(f'connect with: psql "{cluster.dsn(DATABASE)}"')


def replica_cluster(layout: Layout) -> Cluster:
    return Cluster(
        layout.home / "replica", port=int(os.environ.get("HYBRID_SEARCH_REPLICA_PORT", "54330"))
    )


def cmd_replica(args, layout: Layout) -> None:
    """A streaming hot standby of the local cluster: read-only searches, same results."""
    replica = replica_cluster(layout)
    if args.action == "stop":
        print("stopped" if replica.stop() else "not running")
        return
    if args.action == "dsn":
        print(replica.dsn(DATABASE))
        return
    primary = local_cluster(layout)
    if not primary.running:
        raise SystemExit("hybrid-search: start the local cluster first (`hybrid-search start`)")
    (report.changing if replica.init_standby(primary) else report.done)(
        f"standby {replica.data} (pg_basebackup of {primary.data})"
    )
    (report.changing if replica.start() else report.done)(f"standby running ({replica.socket_dir})")
    print(f'connect with: psql "{replica.dsn(DATABASE)}"')


def cmd_stop(args, layout: Layout) -> None:
    stopped = local_cluster(layout).stop()
    print("stopped" if stopped else "not running")


def cmd_status(args, layout: Layout) -> None:
    cluster = local_cluster(layout)
    state = (
        "running"
        if cluster.running
        else "initialized, stopped"
        if cluster.initialized
        else "not created"
    )
    print(f"cluster {cluster.data}: {state}")
    if layout.state_file.exists():
        print(f"model: {models.installed_model(layout)['model']}")
    if not cluster.running:
        sys.exit(3)  # like pg_ctl status


def cmd_dsn(args, layout: Layout) -> None:
    print(local_cluster(layout).dsn(DATABASE))


def cmd_psql(args, layout: Layout) -> None:
    from .layout import pg_bin

    psql = str(pg_bin() / "psql")
    os.execv(psql, [psql, local_cluster(layout).dsn(DATABASE), *args.psql_args])


def cmd_init_sql(args, layout: Layout) -> None:
    """SQL that creates and configures the extension for the installed model and venv,
    for an existing server: `hybrid-search init-sql | psql DBNAME`."""
    print(database.init_sql(layout, models.installed_model(layout)["model"]))


def cmd_bench(args, layout: Layout) -> None:
    """The retrieval benchmark (bench/retrieval.py) with the given options."""
    from .layout import REPO

    script = str(REPO / "bench" / "retrieval.py")
    os.execv(sys.executable, [sys.executable, script, *args.psql_args])


def cmd_demo(args, layout: Layout) -> None:
    cmd_setup(args, layout)
    cmd_start(args, layout)
    demo.run(local_cluster(layout).dsn(DATABASE), models.installed_model(layout))


def main(argv: list[str] | None = None) -> None:
    os.umask(0o022)  # whatever we install must be readable by the server's OS user
    parser = argparse.ArgumentParser(prog="hybrid-search", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def model_options(p):
        group = p.add_mutually_exclusive_group()
        group.add_argument("--model", help="BGE-M3 directory or hub id (default: BAAI/bge-m3)")
        group.add_argument(
            "--test-model", action="store_true", help="use the tiny random BGE-M3-shaped test model"
        )

    setup = commands.add_parser("setup", help="install packages, pgvector, venv, extension, model")
    model_options(setup)
    setup.set_defaults(func=cmd_setup)
    commands.add_parser("start", help="start the local cluster, create the extension").set_defaults(
        func=cmd_start
    )
    commands.add_parser("stop", help="stop the local cluster").set_defaults(func=cmd_stop)
    replica = commands.add_parser(
        "replica", help="a streaming hot standby of the local cluster (start, stop, dsn)"
    )
    replica.add_argument("action", nargs="?", choices=["start", "stop", "dsn"], default="start")
    replica.set_defaults(func=cmd_replica)
    commands.add_parser("status", help="is the local cluster running").set_defaults(func=cmd_status)
    commands.add_parser("dsn", help="print the local cluster's connection string").set_defaults(
        func=cmd_dsn
    )
    # everything after `psql` (or `bench`) goes to psql (or the benchmark), options included
    commands.add_parser(
        "bench", help="retrieval benchmark [--docs N --save ...]", add_help=False
    ).set_defaults(func=cmd_bench)
    commands.add_parser("psql", help="psql on the local cluster [psql options]").set_defaults(
        func=cmd_psql
    )
    commands.add_parser(
        "init-sql", help="print SQL that creates and configures the extension on any server"
    ).set_defaults(func=cmd_init_sql)
    demo_parser = commands.add_parser("demo", help="setup, start, load a corpus, run queries")
    model_options(demo_parser)
    demo_parser.set_defaults(func=cmd_demo)

    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("psql", "bench"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.psql_args = extra
    args.func(args, Layout.from_environment())
