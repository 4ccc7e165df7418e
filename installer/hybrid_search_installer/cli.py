"""`hybrid-search`: install, run and try hybrid_search on this machine."""

import argparse
import os
import sys
import time

from . import (
    database,
    demo,
    extension_files,
    models,
    plpython_env,
    report,
    server_copy,
    system,
    worker,
)
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
    server_copy.ensure(layout)
    extension_files.ensure_extension_files(layout)
    record = models.ensure_model(layout, args.model, args.test_model, args.offline_models)
    models.prepare_weights(layout, record)
    print(f"setup finished in {time.monotonic() - started:.1f} s; model: {record['model']}")


def cmd_start(args, layout: Layout) -> None:
    cluster = local_cluster(layout)
    record = models.installed_model(layout)
    (report.changing if cluster.init() else report.done)(f"cluster {cluster.data}")
    preload_changed = cluster.preload(layout.venv)
    if cluster.start():
        report.changing(f"server running ({cluster.socket_dir})")
    elif preload_changed or plpython_env.changed_since(layout, cluster.started_at):
        # the postmaster holds the model stack it imported at its start
        report.changing(f"server restarted: preloading {layout.venv}")
        cluster.restart()
    else:
        report.done(f"server running ({cluster.socket_dir})")
    database.ensure_database(cluster.dsn(), DATABASE)
    database.ensure_extension(
        cluster.dsn(DATABASE),
        layout,
        record["model"],
        record.get("dense_model"),
        record.get("sparse_model"),
    )
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


def cmd_shards(args, layout: Layout) -> None:
    """A coordinator and shards on this machine (docs/sharding.md)."""
    from . import shards

    coordinator, shard_clusters = shards.local_clusters(layout, args.shards, args.port)
    if args.action == "stop":
        for cluster in (coordinator, *shard_clusters):
            print(f"{cluster.data}: {'stopped' if cluster.stop() else 'not running'}")
        return
    if args.action == "dsn":
        print(coordinator.dsn(shards.DATABASE))
        return
    record = models.installed_model(layout)
    shards.start_local(
        layout,
        args.shards,
        args.port,
        record["model"],
        args.shard_key,
        clusters=(coordinator, shard_clusters),
    )
    print(f'connect with: psql "{coordinator.dsn(shards.DATABASE)}"')


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
    print(database.init_sql(layout, models.installed_model(layout)))


def cmd_bench(args, layout: Layout) -> None:
    """The retrieval benchmark (bench/retrieval.py) with the given options, after
    installing its peers (Seismic, tantivy: requirements/bench.lock) into the
    virtualenv this command runs from, never into the server's."""
    from .layout import REPO

    if sys.prefix == sys.base_prefix:
        raise SystemExit("hybrid-search bench: run it from the project's .venv (make bench)")
    lock = REPO / "requirements" / "bench.lock"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    report.run([*pip, "--require-hashes", "--no-deps", "-r", lock])
    script = str(REPO / "bench" / "retrieval.py")
    os.execv(sys.executable, [sys.executable, script, *args.psql_args])


def cmd_worker(args, layout: Layout) -> None:
    dsn = args.dsn or local_cluster(layout).dsn(DATABASE)
    worker.run_worker(dsn, args.batch_size, args.once, args.poll)


def cmd_backfill(args, layout: Layout) -> None:
    dsn = args.dsn or local_cluster(layout).dsn(DATABASE)
    if worker.backfill(dsn, args.all, args.batch_size):
        sys.exit(1)


def cmd_convert_model(args, layout: Layout) -> None:
    """Write a copy of a model with its weights in the dtype the server computes in,
    so that backends share them memory-mapped (see plpython/hybrid_search/convert.py)."""
    target = args.target or f"{args.source.rstrip('/')}-{args.dtype}"
    convert = [layout.venv_python, "-m", "hybrid_search_tools.convert", args.source, target]
    report.run([*convert, "--dtype", args.dtype])
    print(f"converted: {target}")
    if target == f"{args.source.rstrip('/')}-{args.dtype}":
        print(f"with dtype 'auto' (the default) the server loads it for {args.source} by itself")
        print("where it computes in that format: SELECT * FROM hybrid_search_model_info();")
    print(f"or: SELECT hybrid_search_configure(dtype => '{args.dtype}');")
    print(f"    SELECT hybrid_search_set_model('{target}');")


def cmd_eval(args, layout: Layout) -> None:
    """Every leg and fusion of a BEIR-format collection, through a scratch database."""
    from pathlib import Path

    from . import evaluate

    if args.offline_models or args.test_model or args.model:
        record = models.ensure_model(layout, args.model, args.test_model, args.offline_models)
    else:
        record = models.installed_model(layout)
    rows, notes = evaluate.run(
        layout, record, Path(args.directory), args.k, args.candidates, args.rrf_k
    )
    if args.save:
        command = " ".join(["hybrid-search eval", *args.raw_argv])
        lines = "".join(f"- {note}\n" for note in notes)
        table = evaluate.format_table(rows, args.k)
        Path(args.save).write_text(f"`{command}`\n\n{lines}\n{table}\n")


def cmd_demo(args, layout: Layout) -> None:
    cmd_setup(args, layout)
    cmd_start(args, layout)
    demo.run(local_cluster(layout).dsn(DATABASE), models.installed_model(layout), args.whole_manual)


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
        group.add_argument(
            "--offline-models",
            action="store_true",
            help="all-MiniLM-L6-v2 (dense) and a tiny SPLADE (sparse) from PyPI wheels",
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
    shards_parser = commands.add_parser(
        "shards", help="a local coordinator and shard clusters (start, stop, dsn)"
    )
    shards_parser.add_argument(
        "action", nargs="?", choices=["start", "stop", "dsn"], default="start"
    )
    shards_parser.add_argument("--shards", type=int, default=2, help="shard servers (default 2)")
    shards_parser.add_argument(
        "--port", type=int, default=54340, help="coordinator's port; shards take the next ones"
    )
    shards_parser.add_argument(
        "--shard-key", default=None, help="metadata key to shard by (default: id)"
    )
    shards_parser.set_defaults(func=cmd_shards)
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

    def queue_options(p):
        p.add_argument("--dsn", help="database to work on (default: the local cluster's)")
        p.add_argument("--batch-size", type=int, help="rows per model call (default: settings)")

    worker_parser = commands.add_parser("worker", help="embed queued documents (embed_mode queued)")
    queue_options(worker_parser)
    worker_parser.add_argument("--once", action="store_true", help="exit when the queue is empty")
    worker_parser.add_argument(
        "--poll", type=float, default=5.0, help="seconds between checks for retries (default 5)"
    )
    worker_parser.set_defaults(func=cmd_worker)
    backfill_parser = commands.add_parser(
        "backfill", help="queue documents without vectors and embed them, with progress"
    )
    queue_options(backfill_parser)
    backfill_parser.add_argument("--all", action="store_true", help="re-embed every document")
    backfill_parser.set_defaults(func=cmd_backfill)
    convert_parser = commands.add_parser(
        "convert-model", help="copy a model with its weights stored as bf16 (or fp16, fp32)"
    )
    convert_parser.add_argument("source", help="model directory")
    convert_parser.add_argument("--target", help="default: SOURCE-DTYPE")
    convert_parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    convert_parser.set_defaults(func=cmd_convert_model)
    eval_parser = commands.add_parser(
        "eval", help="nDCG, recall, MRR of every leg and fusion on a BEIR directory"
    )
    eval_parser.add_argument("directory", help="corpus.jsonl, queries.jsonl, qrels.tsv")
    model_options(eval_parser)
    eval_parser.add_argument("--k", type=int, default=10, help="cut-off (default 10)")
    eval_parser.add_argument("--candidates", type=int, default=100, help="per leg (default 100)")
    eval_parser.add_argument("--rrf-k", type=int, default=60, help="RRF constant (default 60)")
    eval_parser.add_argument("--save", metavar="FILE", help="also write the table to FILE")
    eval_parser.set_defaults(func=cmd_eval)
    demo_parser = commands.add_parser("demo", help="setup, start, load a corpus, run queries")
    model_options(demo_parser)
    demo_parser.add_argument(
        "--whole-manual",
        action="store_true",
        help="load all of the manual's 3,200 sections, not only the reference and a few chapters",
    )
    demo_parser.set_defaults(func=cmd_demo)

    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("psql", "bench"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.psql_args = extra
    args.raw_argv = (argv if argv is not None else sys.argv[1:])[1:]
    args.func(args, Layout.from_environment())
