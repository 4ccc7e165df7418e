"""What each index of documents adds to a COPY's rows, on a kept cluster: the
backend's CPU time a row with no index, with each index alone, and with all.

The cluster is one that retrieval.py (or scan_legs.py) left running with --keep,
loaded from the same seed. Each measure opens a connection, drops every index but
the one measured (and those of the primary key and unique constraints) in a
transaction, COPYs the rows in COPYs of 2,000, reads the backend's time on a CPU
from /proc/<pid>/schedstat (the machine's other load disturbs that far less than
the wall clock), rolls back (the indexes come back, the rows are dead) and VACUUMs
documents, which empties the pending lists. The rows are enough for two merges of a
sparse_inverted index's pending list (retrieval.py's rows_for_merges, as its insert
measure copies): a merge writes the whole index again, so a rate between two merges
would leave it out. Measures alternate over the rounds; the table has each one's
median.

    .venv/bin/python bench/retrieval.py --docs 100000 --keep --fusion-only --dense-index graph
    .venv/bin/python bench/insert_costs.py --dsn "<the kept dsn>" --docs 100000
"""

import argparse
import statistics
import time

import psycopg
from builds import backend_cpu_ns
from corpus import Corpus
from pgvector.psycopg import register_vector
from retrieval import load, rows_for_merges

BATCH = 2000


def indexes(dsn):
    with psycopg.connect(dsn) as conn:
        return [
            name
            for (name,) in conn.execute(
                "select indexrelid::regclass::text from pg_index"
                " where indrelid = 'documents'::regclass"
                " and not exists (select from pg_constraint where conindid = indexrelid)"
                " order by 1"
            )
        ]


def measure(dsn, corpus, keep, first_id, merges):
    """(backend CPU µs, wall µs) a row COPYed with only the indexes in keep."""
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        rows = rows_for_merges(conn, merges)
        for index in set(indexes(dsn)) - keep:
            conn.execute(f"drop index {index}")
        cpu, wall = backend_cpu_ns(conn), time.perf_counter()
        for start in range(first_id, first_id + rows, BATCH):
            load(conn, corpus, range(start, min(start + BATCH, first_id + rows)))
        cpu, wall = (backend_cpu_ns(conn) - cpu) / 1e9, time.perf_counter() - wall
        conn.rollback()
        conn.autocommit = True
        conn.execute("vacuum documents")
    return 1e6 * cpu / rows, 1e6 * wall / rows, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="a kept retrieval.py cluster's")
    parser.add_argument("--docs", type=int, default=100_000, help="the kept cluster's corpus")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--merges", type=int, default=2)
    args = parser.parse_args()
    corpus = Corpus(args.docs, 10)
    names = indexes(args.dsn)
    modes = {"no index": set(), **{name: {name} for name in names}, "all": set(names)}
    results = {mode: [] for mode in modes}
    first_id = args.docs * 100
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("vacuum documents")  # the first measure from empty pending lists too
    for _ in range(args.rounds):
        for mode, keep in modes.items():
            cpu, wall, rows = measure(args.dsn, corpus, keep, first_id, args.merges)
            results[mode].append((cpu, wall))
            first_id += rows
    none = statistics.median(c for c, _ in results["no index"])
    print(f"# COPY cost a row, {args.docs:,}-row kept cluster, medians of {args.rounds} rounds\n")
    print("| indexes | backend CPU µs a row | added to no index | wall µs a row |")
    print("|---|---|---|---|")
    for mode, measures in results.items():
        cpu = statistics.median(c for c, _ in measures)
        wall = statistics.median(w for _, w in measures)
        added = "" if mode == "no index" else f"{cpu - none:.0f}"
        print(f"| {mode} | {cpu:.0f} | {added} | {wall:.0f} |")


if __name__ == "__main__":
    main()
