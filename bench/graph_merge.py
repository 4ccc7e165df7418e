"""VACUUM linking a dense_flat graph's tail: in memory (when the graph and its tail
fit maintenance_work_mem) against node by node on the pages (when they do not), on
the same rows in the same run.

On a kept cluster (retrieval.py --keep): a table graph_merge of the first --rows
documents' vectors under a dense_flat graph index as the extension makes it (degree
32, build width 128; documents itself is not touched). Two cases: a built graph of
80% of the rows and a tail of the other 20% (writes since the last VACUUM), and an
index built empty with every row in its tail (a bulk load after
hybrid_search_set_model). For each, the table is made again for each way, and the
VACUUM is timed with maintenance_work_mem at 4 GB (in memory), or at 16 MB or 1 MB
(on the pages: the graph of --rows 30,000 takes about 38 MB), with the WAL it wrote; then a walk of width 100 is measured against the exact
top 10 (a sequential scan) of queries that are documents past --rows.

    .venv/bin/python bench/retrieval.py --docs 50000 --keep --fusion-only
    .venv/bin/python bench/graph_merge.py --dsn "<the kept dsn>" --rows 30000
"""

import argparse
import time

import psycopg

INDEX = (
    "create index on graph_merge using dense_flat (v vector_cosine_ops)"
    " with (graph_degree = 32, graph_build_ef = 128)"
)
CASES = {"a graph of 80% and a tail of 20%": 0.8, "every row a tail (built empty)": 0.0}
# on the pages: at 16 MB the links back are held (a neighbour writes them together), at
# 1 MB the memory fills every few hundred nodes and nearly each one is written alone
WAYS = {"in memory": "4GB", "on the pages, 16 MB": "16MB", "on the pages, 1 MB": "1MB"}


def prepare(conn, rows, built):
    """graph_merge: the first rows * built rows under a built graph, the rest its tail."""
    conn.execute("drop table if exists graph_merge")
    conn.execute("create table graph_merge (id bigint, v vector) with (autovacuum_enabled = false)")
    base = int(rows * built)
    conn.execute("insert into graph_merge select id, dense from documents where id <= %s", [base])
    conn.execute("set maintenance_work_mem = '4GB'")
    conn.execute(INDEX)
    conn.execute(
        "insert into graph_merge select id, dense from documents where id > %s and id <= %s",
        [base, rows],
    )
    conn.execute("checkpoint")
    return rows - base


def vacuum(conn, memory):
    """(seconds, WAL MB) of a VACUUM with maintenance_work_mem at memory."""
    conn.execute(f"set maintenance_work_mem = '{memory}'")
    lsn = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
    started = time.perf_counter()
    conn.execute("vacuum graph_merge")
    seconds = time.perf_counter() - started
    wal = conn.execute("select pg_current_wal_lsn() - %s::pg_lsn", [lsn]).fetchone()[0]
    tail = conn.execute(
        "select (dense_flat_check(indexrelid) ->> 'graph_tail_rows')::bigint from pg_index"
        " where indrelid = 'graph_merge'::regclass"
    ).fetchone()[0]
    assert tail == 0, f"{tail} rows left in the tail"
    return seconds, float(wal) / 2**20


def top10(conn, query, exact):
    conn.execute(f"set enable_indexscan = {'off' if exact else 'on'}")
    conn.execute(f"set enable_seqscan = {'on' if exact else 'off'}")
    return {
        i
        for (i,) in conn.execute(
            "select id from graph_merge order by v <=> %s::vector limit 10", [query]
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="a kept retrieval.py cluster's")
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    table = []
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        # documents past the table's rows: of the corpus, but not in graph_merge
        queries = [
            v
            for (v,) in conn.execute(
                "select dense::text from documents where id > %s order by id limit %s",
                [args.rows, args.queries],
            )
        ]
        assert len(queries) == args.queries, "the kept corpus has too few rows past --rows"
        for case, built in CASES.items():
            exact = None
            for way, memory in WAYS.items():
                tail = prepare(conn, args.rows, built)
                seconds, wal = vacuum(conn, memory)
                if exact is None:
                    exact = [top10(conn, q, True) for q in queries]
                conn.execute("set hybrid_search.dense_ef_search = 100")
                found = sum(
                    len(top10(conn, q, False) & e) for q, e in zip(queries, exact, strict=True)
                )
                conn.execute("reset all")
                table.append((case, way, tail, seconds, wal, found / (10 * len(queries))))
        conn.execute("drop table graph_merge")
    print(f"# VACUUM linking a graph's tail: {args.rows:,} rows, {args.queries} queries\n")
    print("| case | way | tail rows | VACUUM s | ms a row | WAL MB | recall@10 (width 100) |")
    print("|---|---|---|---|---|---|---|")
    for case, way, tail, seconds, wal, recall in table:
        print(
            f"| {case} | {way} | {tail:,} | {seconds:.1f} | {1000 * seconds / tail:.2f}"
            f" | {wal:.0f} | {recall:.3f} |"
        )
    print("\n| ratio (same run) | value |\n|---|---|")
    for case in CASES:
        memory, *pages = (next(r for r in table if r[:2] == (case, way)) for way in WAYS)
        for row in pages:
            print(f"| {case}: VACUUM {row[1]} / in memory | {row[3] / memory[3]:.1f} |")


if __name__ == "__main__":
    main()
