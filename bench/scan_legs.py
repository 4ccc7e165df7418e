"""The sparse and BM25 legs alone against their peers: a quick loop for the C scan.

retrieval.py measures everything in about 23 minutes at 100,000 documents; this
measures only what the index scans decide (each leg unfiltered, with the 10%
filter, for the row-level-security role, and optionally after 20% churn before and after
VACUUM) beside the numpy brute force, Seismic and tantivy, in one run.
With --keep the loaded cluster stays; --dsn measures such a cluster again (the
corpus is regenerated from its seed), so a rebuilt extension library is
measured on the same data in minutes.

    .venv/bin/python bench/scan_legs.py --docs 100000 --keep
    .venv/bin/python bench/scan_legs.py --docs 100000 --dsn "<the kept dsn>"
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import psycopg
from common import add_huge_pages_argument, use_huge_pages
from corpus import Corpus
from hybrid_search_installer import database, extension_files
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb
from retrieval import (
    BM25_INDEX,
    SPARSE_INDEX,
    TENANT,
    K,
    Table,
    bm25_leg,
    build_peers,
    load,
    prepare_documents,
    row_security_reader,
    sparse_leg,
    timed_in_process,
)


def build(conn, corpus):
    prepare_documents(conn)  # no leg here uses the dense index it drops
    load(conn, corpus)
    conn.execute("vacuum analyze documents")
    conn.execute(SPARSE_INDEX)
    conn.execute(BM25_INDEX)
    conn.execute("select hybrid_search_refresh()")


def backend_cpu_seconds(conn):
    """User plus system CPU seconds of the connection's backend (/proc: the cluster is
    local), which the machine's other load disturbs far less than the wall clock."""
    pid = conn.info.backend_pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_leg(conn, table, cpu, key, name, leg, qs, reference):
    """table.sql, and the backend's CPU per query (ms) under key in cpu."""
    started = backend_cpu_seconds(conn)
    table.sql(conn, key, name, leg, qs, reference)
    cpu[key] = (name, 1000 * (backend_cpu_seconds(conn) - started) / (2 * len(qs)))


def legs(conn, table, cpu, corpus, qs, label, key, mask):
    jflt = Jsonb({"tenant": TENANT}) if key == "filtered " else None
    timed_leg(conn, table, cpu, f"{key}sparse", "sparse_inverted ORDER BY <#> LIMIT 10" + label,
              sparse_leg(corpus, K, jflt), qs, lambda q: corpus.exact_sparse(q, K, mask))  # fmt: skip
    timed_leg(conn, table, cpu, f"{key}bm25", "BM25 leg" + label, bm25_leg(corpus, K, jflt),
              qs, lambda q: corpus.exact_bm25(q, K, mask))  # fmt: skip


def measure(conn, corpus, peers, qs, churn):
    table, cpu = Table(), {}
    tenant = corpus.tenant == TENANT
    # the fixed cost of a round trip with a trivial indexed query: what no scan can save
    table.sql(conn, "floor", "floor: select id from documents where id = $1 (primary key)",
              ("select id from documents where id = %s", lambda q: (q + 1,)), qs)  # fmt: skip
    legs(conn, table, cpu, corpus, qs, "", "", None)
    latencies, ids = timed_in_process(lambda q: corpus.exact_sparse(q, K), qs)
    table.add("sparse numpy", "sparse, numpy brute force", latencies, ids, qs)
    latencies, ids = timed_in_process(lambda q: corpus.exact_bm25(q, K), qs)
    table.add("bm25 numpy", "BM25, numpy brute force", latencies, ids, qs)
    if peers and "seismic" in peers:
        latencies, ids = timed_in_process(
            lambda q: peers["seismic"].search(*corpus.q_sparse[q]), qs
        )
        table.add("seismic", "Seismic", latencies, ids, qs)
    if peers:
        latencies, ids = timed_in_process(lambda q: peers["tantivy"].search(corpus.q_words[q]), qs)
        table.add("tantivy", "tantivy", latencies, ids, qs)
    legs(conn, table, cpu, corpus, qs, " (10% filter)", "filtered ", tenant)
    with row_security_reader(conn):
        # the BM25 leg with the statistics of the rows the role sees (bm25_statistics
        # 'visible', the default): a pass over them a query
        legs(conn, table, cpu, corpus, qs, " (RLS role seeing 10%)", "rls ", tenant)
    if churn:
        alive = np.arange(1, corpus.n + 1) % 10 != 0
        conn.execute(
            "update documents set metadata = metadata || '{\"churned\": true}' where id % 10 = 5"
        )
        conn.execute("delete from documents where id % 10 = 0")
        legs(conn, table, cpu, corpus, qs, " (20% churn, before VACUUM)", "churn ", alive)
        conn.execute("vacuum documents")
        legs(conn, table, cpu, corpus, qs, " (20% churn, after VACUUM)", "vacuumed ", alive)
    return table, cpu


def report(table, cpu):
    out = [
        "| query | p50 ms | p95 ms | p99 ms | recall@10 | full lists |",
        "|---|---|---|---|---|---|",
    ]
    out += [f"| {' | '.join(row)} |" for row in table.rows]
    out += ["", "| ratio (same run) | value |", "|---|---|"]
    pairs = [("sparse", "floor"), ("bm25", "floor"), ("sparse", "sparse numpy"), ("bm25", "bm25 numpy"), ("sparse", "seismic"),
             ("bm25", "tantivy")]  # fmt: skip
    for leg in ("sparse", "bm25"):
        pairs += [(f"{stage} {leg}", leg) for stage in ("filtered", "rls", "churn", "vacuumed")]
    out += [f"| {a} / {b} | {table.ratio(a, b):.2f} |" for a, b in pairs
            if a in table.p95 and b in table.p95]  # fmt: skip
    # the timed runs and timed()'s warm-up run of each query, whose CPU the counter includes
    out += ["", "| query | backend CPU ms per query |", "|---|---|"]
    out += [f"| {name} | {ms:.2f} |" for name, ms in cpu.values()]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dsn", help="a cluster this script loaded with --keep")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--no-peers", action="store_true", help="skip Seismic and tantivy")
    parser.add_argument(
        "--no-seismic",
        action="store_true",
        help="skip Seismic (at a million rows its builds outgrew 24 GiB beside the cluster)",
    )
    parser.add_argument("--churn", action="store_true", help="then churn 20%% (changes the data)")
    add_huge_pages_argument(parser)
    args = parser.parse_args()
    if args.huge_pages and args.dsn:
        parser.error("--huge-pages: for the cluster this script makes, not one given by --dsn")
    cluster = scratch = peers = None
    dsn = args.dsn
    if dsn is None:
        extension_files.ensure_extension_files(Layout.from_environment())  # never a stale library
        scratch = Path(tempfile.mkdtemp(prefix="hybrid_search_scan_"))
        scratch.chmod(0o755)
        cluster = Cluster(scratch / "cluster", port=5433)
        cluster.init()
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = 2GB\nmaintenance_work_mem = 2GB\nmax_wal_size = 8GB\n")
    try:
        if args.huge_pages:  # checked before the minutes the corpus takes
            use_huge_pages(cluster)
        corpus = Corpus(args.docs, args.queries)
        corpus.build_references()
        peers = None if args.no_peers else build_peers(corpus, {}, seismic=not args.no_seismic)
        if cluster is not None:
            cluster.start()
            database.recreate_database(cluster.dsn("postgres"), "bench")
            dsn = cluster.dsn("bench")
            database.ensure_extension(dsn, Layout.from_environment(), None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            register_vector(conn)
            if args.dsn is None:
                build(conn, corpus)
            print(report(*measure(conn, corpus, peers, range(args.queries), args.churn)))
    finally:
        if peers:
            peers["tantivy"].close()
        if cluster is not None and args.keep and dsn is not None:
            print(f'kept: --dsn "{dsn}"')
        elif cluster is not None:
            cluster.destroy()
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
