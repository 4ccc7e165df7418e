"""Soak: concurrent writers, searchers and index maintenance on a throwaway cluster.

Writers insert small batches (embedded by the trigger in the same transaction),
re-write and delete some of their own rows; searchers run hybrid_search; every
few seconds a maintainer runs VACUUM documents (which merges both sparse_inverted
indexes' pending lists while the searchers scan them) and hybrid_search_refresh(). At the end every row a
writer was told is committed must be there (and no deleted one), embedded, and
hybrid_search_check() must report no error. Prints throughput and latency per
operation, and the p95 of each half of the run (stable latency: similar halves).
Loopback only (a Unix socket), bounded by --seconds.

    .venv/bin/python bench/soak.py --seconds 120 --writers 2 --searchers 2
"""

import argparse
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg
from hybrid_search_installer import database, extension_files, models
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout

WORDS = [
    "vacuum",
    "index",
    "replica",
    "wal",
    "lock",
    "tuple",
    "query",
    "plan",
    "join",
    "hash",
    "btree",
    "gin",
    "hnsw",
    "vector",
    "tenant",
    "backup",
    "restore",
    "checkpoint",
    "autovacuum",
    "partition",
    "sequence",
    "trigger",
    "policy",
    "role",
]


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


class Recorder:
    """Latencies and errors per operation, thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples = defaultdict(list)  # op -> [(finished at, seconds)]
        self.errors = defaultdict(list)

    def time(self, op, fn):
        t = time.perf_counter()
        try:
            result = fn()
        except psycopg.Error as error:
            with self.lock:
                self.errors[op].append(f"{error.sqlstate}: {error}")
            return None
        with self.lock:
            self.samples[op].append((time.perf_counter(), time.perf_counter() - t))
        return result


def warm(conn, ready):
    """Load the model in this backend, then wait for the others: the clock starts after."""
    conn.execute("select embed_dense('warm up')")
    ready.wait()


def writer(dsn, seed, stop, rec, alive, deleted, ready):
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        warm(conn, ready)
        mine = []
        while not stop.is_set():
            batch = [text(rng, rng.randint(5, 40)) for _ in range(rng.randint(1, 10))]
            rows = rec.time(
                "insert (1-10 rows)",
                lambda b=batch: conn.execute(
                    "insert into documents (content, metadata)"
                    " select c, jsonb_build_object('writer', %s::int) from unnest(%s::text[]) c"
                    " returning id",
                    [seed, b],
                ).fetchall(),
            )
            if rows:
                mine.extend(r[0] for r in rows)
                alive.update(r[0] for r in rows)
            if mine and rng.random() < 0.3:
                doc = rng.choice(mine)
                rec.time(
                    "update content",
                    lambda d=doc: conn.execute(
                        "update documents set content = %s where id = %s", [text(rng, 20), d]
                    ),
                )
            if len(mine) > 20 and rng.random() < 0.2:
                doc = mine.pop(rng.randrange(len(mine)))
                if rec.time(
                    "delete",
                    lambda d=doc: conn.execute("delete from documents where id = %s", [d]),
                ):
                    alive.discard(doc)
                    deleted.add(doc)


def searcher(dsn, seed, stop, rec, ready):
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        warm(conn, ready)
        while not stop.is_set():
            query = text(rng, rng.randint(1, 4))
            rec.time(
                "hybrid_search k=10",
                lambda q=query: conn.execute("select * from hybrid_search(%s, 10)", [q]).fetchall(),
            )


def refresher(dsn, stop, rec, every, ready):
    with psycopg.connect(dsn, autocommit=True) as conn:
        warm(conn, ready)
        while not stop.wait(every):
            rec.time("vacuum documents", lambda: conn.execute("vacuum documents"))
            rec.time(
                "hybrid_search_refresh", lambda: conn.execute("select hybrid_search_refresh()")
            )


def p(values, q):
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run(args) -> int:
    layout = Layout.from_environment()
    model = models.installed_model(layout)["model"]
    extension_files.ensure_extension_files(layout)  # never a stale library
    scratch = Path(tempfile.mkdtemp(prefix="hybrid_search_soak_"))
    scratch.chmod(0o755)
    cluster = Cluster(scratch / "cluster", port=5432)
    try:
        cluster.init()
        cluster.start()
        database.recreate_database(cluster.dsn("postgres"), "soak")
        dsn = cluster.dsn("soak")
        database.ensure_extension(dsn, layout, model)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rng = random.Random(0)
            conn.execute(
                "insert into documents (content) select unnest(%s::text[])",
                [[text(rng, rng.randint(5, 40)) for _ in range(args.initial)]],
            )
            conn.execute("select hybrid_search_refresh()")
            alive = {r[0] for r in conn.execute("select id from documents")}
        deleted: set[int] = set()
        stop = threading.Event()
        ready = threading.Barrier(args.writers + args.searchers + 2)
        rec = Recorder()
        threads = [
            threading.Thread(target=writer, args=(dsn, i, stop, rec, alive, deleted, ready))
            for i in range(args.writers)
        ]
        threads += [
            threading.Thread(target=searcher, args=(dsn, 100 + i, stop, rec, ready))
            for i in range(args.searchers)
        ]
        threads.append(
            threading.Thread(target=refresher, args=(dsn, stop, rec, args.refresh, ready))
        )
        for t in threads:
            t.start()
        ready.wait()  # every backend has loaded the model
        started = time.perf_counter()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started

        with psycopg.connect(dsn, autocommit=True) as conn:
            present = {r[0] for r in conn.execute("select id from documents")}
            unembedded = conn.execute(
                "select count(*) from documents where dense is null or sparse is null"
            ).fetchone()[0]
            checks = conn.execute("select * from hybrid_search_check()").fetchall()
    finally:
        cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"soak: {elapsed:.0f} s, {args.writers} writers, {args.searchers} searchers,"
        f" refresh every {args.refresh:g} s, {args.initial} initial rows, model {model}"
    )
    print()
    print(
        "| operation | count | per second | p50 ms | p95 ms | p99 ms | p95 1st half | p95 2nd half | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    middle = started + elapsed / 2
    for op in sorted(set(rec.samples) | set(rec.errors)):
        samples = rec.samples[op]
        ms = [s * 1000 for _, s in samples]
        first = [s * 1000 for at, s in samples if at < middle]
        second = [s * 1000 for at, s in samples if at >= middle]
        print(
            f"| {op} | {len(ms)} | {len(ms) / elapsed:.1f} | {p(ms, 50):.1f} | {p(ms, 95):.1f}"
            f" | {p(ms, 99):.1f} | {p(first, 95):.1f} | {p(second, 95):.1f}"
            f" | {len(rec.errors[op])} |"
        )
    lost = alive - present
    resurrected = deleted & present
    print()
    print(f"rows: {len(present)} present, {len(alive)} expected; lost {len(lost)},")
    print(f"deleted but present {len(resurrected)}, unembedded {unembedded}")
    print("hybrid_search_check: " + ", ".join(f"{name} {status}" for name, status, _ in checks))
    for op, errors in rec.errors.items():
        if errors:
            print(f"errors in {op}: {errors[:3]}")
    bad = (
        lost
        or resurrected
        or unembedded
        or any(rec.errors.values())
        or any(s == "error" for _, s, _ in checks)
    )
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--searchers", type=int, default=2)
    parser.add_argument("--refresh", type=float, default=10, help="seconds between refreshes")
    parser.add_argument("--initial", type=int, default=2000, help="rows loaded before the run")
    raise SystemExit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
