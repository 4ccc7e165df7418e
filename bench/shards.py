"""One node against a coordinator with 2 shards on the same machine (docs/sharding.md).

The retrieval benchmark's synthetic corpus (bench/corpus.py: 1024-d vectors, sparse
vectors, Zipf words, 10 tenants) is loaded with its vectors into one node, and into
two shard servers (each row COPied straight to the shard its id hashes to, as the
coordinator's routing table would place it). The same hybrid_search(query, vectors)
calls then run on the node and on the coordinator, both up at once and taking turns
query by query: latency from one client, the CPU the servers spend per query (the
node's backend; the coordinator's and the shards' backends) and throughput from two
clients. This measures the coordinator's overhead (rounds of parallel calls, JSON in
and out, the merge); on 2 shared cores no speed-up is expected.

    .venv/bin/python bench/shards.py --docs 100000 [--save]
"""

import argparse
import contextlib
import datetime
import io
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
from common import print_table, scratch_database
from corpus import Corpus
from hybrid_search_installer import models, shards
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout
from pgvector.psycopg import register_vector
from retrieval import BM25_INDEX, RESULTS, SPARSE_INDEX, load, prepare_documents, sparse_param

SEARCH = (
    "select id, score from hybrid_search(%s, %s::vector, %s::sparsevec, 10, filter => %s::jsonb)"
)


# as bench/retrieval.py's cluster: the indexes build in memory, no checkpoint mid-load
CONF = "shared_buffers = 2GB\nmaintenance_work_mem = 2GB\nmax_wal_size = 8GB\n"


def finish(conn) -> float:
    started = time.perf_counter()
    conn.execute("vacuum analyze documents")
    conn.execute(SPARSE_INDEX)
    conn.execute(BM25_INDEX)
    conn.execute("select hybrid_search_create_dense_index()")
    return time.perf_counter() - started


def params(corpus, q, tenant):
    return (
        corpus.q_text[q],
        corpus.q_dense[q],
        sparse_param(*corpus.q_sparse[q]),
        None if tenant is None else f'{{"tenant": {tenant}}}',
    )


def connect(dsn):
    conn = psycopg.connect(dsn, autocommit=True)
    register_vector(conn)
    return conn


def backend_cpu(pids) -> float:
    """Seconds of CPU the server processes pids have used (same machine: /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def latency(sides, corpus, tenant) -> list[tuple[list[float], list, float, float]]:
    """Each query on every side in turn (the order alternating from query to query),
    so a change in the shared machine's load reaches every side alike. sides: each
    side's DSN and the DSNs of the servers its searches reach (a coordinator's
    shards); with every side's times and answers, the CPU its own backend and all
    its server processes spent per query, in ms."""
    conns = [connect(dsn) for dsn, _ in sides]
    try:
        qs = range(len(corpus.q_text))
        for conn in conns:
            for q in list(qs)[:5]:  # plans, connections to the shards
                conn.execute(SEARCH, params(corpus, q, tenant), prepare=True).fetchall()
        pids = []
        for conn, (_, reached) in zip(conns, sides, strict=True):
            mine = [conn.execute("select pg_backend_pid()").fetchone()[0]]
            for dsn in reached:  # the coordinator's connections, the only ones there now
                with connect(dsn) as shard:
                    mine += [
                        pid
                        for (pid,) in shard.execute(
                            "select pid from pg_stat_activity where backend_type = 'client backend'"
                            " and datname = current_database() and pid <> pg_backend_pid()"
                        )
                    ]
            pids.append(mine)
        # each side's own backend, then all its server processes
        cpu = [(backend_cpu(p[:1]), backend_cpu(p)) for p in pids]
        measured = [([], []) for _ in conns]
        for q in qs:
            order = range(len(conns)) if q % 2 == 0 else reversed(range(len(conns)))
            for side in order:
                started = time.perf_counter()
                answer = (
                    conns[side].execute(SEARCH, params(corpus, q, tenant), prepare=True).fetchall()
                )
                measured[side][0].append((time.perf_counter() - started) * 1000)
                measured[side][1].append(answer)
        return [
            (
                times,
                answers,
                (backend_cpu(p[:1]) - own) * 1000 / len(qs),
                (backend_cpu(p) - every) * 1000 / len(qs),
            )
            for (times, answers, *_), p, (own, every) in zip(measured, pids, cpu, strict=True)
        ]
    finally:
        for conn in conns:
            conn.close()


def throughput(dsn, corpus, clients=2, seconds=10.0) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i):
        with connect(dsn) as conn:
            conn.execute(SEARCH, params(corpus, 0, None), prepare=True).fetchall()
            q = i
            while time.monotonic() < stop:
                conn.execute(
                    SEARCH, params(corpus, q % len(corpus.q_text), None), prepare=True
                ).fetchall()
                done[i] += 1
                q += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def placement(dsn, corpus, by_tenant) -> list[list[int]]:
    """The corpus positions each shard owns, by the coordinator's routing table:
    by id, or by the tenant key."""
    keys = sorted({str(int(t)) for t in corpus.tenant}) if by_tenant else None
    owned = []
    with connect(dsn) as conn:
        for modulus, remainder in conn.execute(
            "select modulus, remainder from hybrid_search_shards order by name"
        ).fetchall():
            if by_tenant:
                tenants = {
                    key
                    for (key,) in conn.execute(
                        "select key from unnest(%s::text[]) as key"
                        " where satisfies_hash_partition('public.documents'::regclass, %s, %s, key)",
                        [keys, modulus, remainder],
                    )
                }
                owned.append([i for i in range(corpus.n) if str(int(corpus.tenant[i])) in tenants])
            else:
                owned.append(
                    [
                        i - 1
                        for (i,) in conn.execute(
                            "select i from generate_series(1, %s) as i"
                            " where satisfies_hash_partition('public.documents'::regclass,"
                            " %s, %s, i::bigint)",
                            [corpus.n, modulus, remainder],
                        )
                    ]
                )
    return owned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput run")
    parser.add_argument(
        "--by-tenant",
        action="store_true",
        help="shard by the tenant key (a tenant's search asks one shard), not by id",
    )
    parser.add_argument(
        "--save", action="store_true", help="write bench/results/DATE-shards-DOCS.md"
    )
    args = parser.parse_args()
    started_at = time.perf_counter()

    layout = Layout.from_environment()
    model = models.installed_model(layout)["model"]
    corpus = Corpus(args.docs, args.queries)
    facts = []
    measured = {}

    scratch = Path(tempfile.mkdtemp(prefix="hybrid_search_bench_shards_"))
    scratch.chmod(0o755)
    coordinator = Cluster(scratch / "coordinator", port=5432)
    shard_clusters = [Cluster(scratch / f"shard_{i}", port=5432) for i in (1, 2)]
    try:
        with scratch_database(layout, model, CONF) as single:
            with connect(single) as conn:
                prepare_documents(conn)
                started = time.perf_counter()
                load(conn, corpus)
                facts.append(("one node: COPY s", f"{time.perf_counter() - started:.1f}"))
                facts.append(("one node: VACUUM + indexes s", f"{finish(conn):.1f}"))
            for cluster in shard_clusters:
                cluster.init()
                with (cluster.data / "postgresql.conf").open("a") as f:
                    f.write(CONF)
            shards.start_local(
                layout,
                2,
                5432,
                model,
                shard_key="tenant" if args.by_tenant else None,
                clusters=(coordinator, shard_clusters),
            )
            dsn = coordinator.dsn(shards.DATABASE)
            for name, ids, cluster in zip(
                ("shard_1", "shard_2"),
                placement(dsn, corpus, args.by_tenant),
                shard_clusters,
                strict=True,
            ):
                with connect(cluster.dsn(shards.DATABASE)) as conn:
                    prepare_documents(conn)
                    started = time.perf_counter()
                    load(conn, corpus, ids)
                    facts.append(
                        (f"{name}: {len(ids)} rows, COPY s", f"{time.perf_counter() - started:.1f}")
                    )
                    facts.append((f"{name}: VACUUM + indexes s", f"{finish(conn):.1f}"))
            loads = [os.getloadavg()]
            for tenant in (None, 3):
                one, two = latency(
                    ((single, ()), (dsn, [c.dsn(shards.DATABASE) for c in shard_clusters])),
                    corpus,
                    tenant,
                )
                measured["single", tenant], measured["shards", tenant] = one, two
            qps = {"single": 0.0, "shards": 0.0}
            for _ in range(2):  # alternated, as the latencies are
                for side, side_dsn in (("single", single), ("shards", dsn)):
                    qps[side] += throughput(side_dsn, corpus, seconds=args.seconds / 2) / 2
            measured["single", "qps"], measured["shards", "qps"] = qps["single"], qps["shards"]
            loads.append(os.getloadavg())
    finally:
        for cluster in (coordinator, *shard_clusters):
            cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    for tenant, name in ((None, "hybrid_search"), (3, "hybrid_search, tenant filter")):
        one, _, _, one_cpu = measured["single", tenant]
        two, _, coordinator_cpu, two_cpu = measured["shards", tenant]
        for p in (50, 95):
            a, b = np.percentile(one, p), np.percentile(two, p)
            rows.append((f"{name} p{p} ms", f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}x"))
        rows.append(
            (
                f"{name}: server CPU ms a query",
                f"{one_cpu:.2f}",
                f"{two_cpu:.2f}",
                f"{two_cpu / one_cpu:.2f}x",
            )
        )
        rows.append((f"{name}: of which the coordinator's", "", f"{coordinator_cpu:.2f}", ""))
    a, b = measured["single", "qps"], measured["shards", "qps"]
    rows.append(("throughput, 2 clients, queries/s", f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}x"))
    same = sum(
        [r[0] for r in x] == [r[0] for r in y]
        for x, y in zip(measured["single", None][1], measured["shards", None][1], strict=True)
    )
    # the machine is shared: the 1-minute load average before and after the queries
    facts += [
        (f"load average (1 min) {when} the queries", f"{load[0]:.2f}")
        for when, load in zip(("before", "after"), loads, strict=True)
    ]
    facts.append(("whole run, min", f"{(time.perf_counter() - started_at) / 60:.1f}"))
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        print(
            f"# one node vs 2 shards (by {'tenant' if args.by_tenant else 'id'}),"
            f" {args.docs} documents, {args.queries} queries\n"
        )
        print_table(rows, ("measure", "one node", "2 shards", "2 shards / one node"))
        print()
        print_table(
            [*facts, ("same top-10 ids (a graph per shard vs one)", f"{same}/{args.queries}")]
        )
    print(report.getvalue(), end="")
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        by = "-by-tenant" if args.by_tenant else ""
        name = f"{datetime.date.today()}-shards-{args.docs}{by}.md"
        (RESULTS / name).write_text(report.getvalue())
        print(f"saved bench/results/{name}")


if __name__ == "__main__":
    main()
