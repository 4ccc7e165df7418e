"""A bulk load into the two sparse_inverted indexes: merged as it goes (the default:
every max(hybrid_search.sparse_pending_limit, rows / 16) inserts, each merge
writing the whole index again), against kept pending for the load
(SET hybrid_search.sparse_pending_limit to its largest) and merged by one VACUUM.

On a kept cluster (retrieval.py --keep): a table bulk_load of the documents' sparse
vectors, metadata and lexemes under the two indexes as the extension makes them
(documents itself is not touched), first filled with every document; each
measure INSERTs every document again under new ids, commits, then VACUUMs (which
merges what is pending), and the rows go again before the next one. Measures
alternate over the rounds; the table has each one's median seconds.

    .venv/bin/python bench/retrieval.py --docs 100000 --keep --fusion-only
    .venv/bin/python bench/bulk_load.py --dsn "<the kept dsn>"
"""

import argparse
import statistics
import time

import psycopg

INDEXES = [
    "create index on bulk_load using sparse_inverted (sparse sparsevec_ip_ops, metadata jsonb_filter_ops)",
    "create index on bulk_load using sparse_inverted (fts tsvector_bm25_ops, metadata jsonb_filter_ops)",
]
MODES = {"merged as it goes": None, "pending, then one VACUUM": 2147483647}


def prepare(conn):
    conn.execute("drop table if exists bulk_load")
    conn.execute(
        "create table bulk_load (id bigint, metadata jsonb, sparse sparsevec, fts tsvector)"
        " with (autovacuum_enabled = false)"
    )
    conn.execute("insert into bulk_load select id, metadata, sparse, fts from documents")
    for statement in INDEXES:
        conn.execute(statement)
    conn.execute("vacuum analyze bulk_load")
    return conn.execute("select max(id) from bulk_load").fetchone()[0]


def measure(conn, offset, limit):
    """(seconds of the INSERT, of the VACUUM after it)"""
    started = time.perf_counter()
    with conn.transaction():
        if limit is not None:
            conn.execute(f"set local hybrid_search.sparse_pending_limit = {limit}")
        conn.execute(
            "insert into bulk_load select id + %s, metadata, sparse, fts from documents", [offset]
        )
    loaded = time.perf_counter()
    conn.execute("vacuum bulk_load")
    return loaded - started, time.perf_counter() - loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="a kept retrieval.py cluster's")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("load 'hybrid_search'")  # defines its settings in this backend
        base = prepare(conn)
        results = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, limit in MODES.items():
                results[mode].append(measure(conn, base, limit))
                conn.execute("delete from bulk_load where id > %s", [base])
                conn.execute("vacuum bulk_load")
        conn.execute("drop table bulk_load")
    print(f"# A bulk load of {base:,} rows into {base:,}, the two sparse_inverted indexes,"
          f" medians of {args.rounds} rounds\n")  # fmt: skip
    print("| load | INSERT s | VACUUM after it s | together s |")
    print("|---|---|---|---|")
    for mode, measures in results.items():
        insert = statistics.median(i for i, _ in measures)
        vacuum = statistics.median(v for _, v in measures)
        print(f"| {mode} | {insert:.1f} | {vacuum:.1f} | {insert + vacuum:.1f} |")


if __name__ == "__main__":
    main()
