"""ColBERT re-ranking with a full-size BGE-M3: what storing the multi-vectors costs
(bytes per document, write time) and what re-ranking the fused top N costs with
stored vectors and with vectors recomputed from the content at query time.

Cost does not depend on weight values, so this uses the random model with
BGE-M3's exact configuration (24 layers, hidden 1024, ColBERT head 1024 -> 1024).
Runs a throwaway cluster. Usage (after `make test` or `hybrid-search setup`):

    .venv/bin/python bench/colbert_cost.py [--model DIR] [--dtype fp32|bf16] [--sizes 10,20,50]

--lock FILE holds FILE (flock) while the extension files are installed and the
extension is created, for machines where several checkouts share one server
installation.
"""

import argparse
import fcntl
import statistics
import time
from contextlib import ExitStack, contextmanager

import psycopg
from common import print_table, scratch_database
from hybrid_search_installer.layout import Layout
from model_memory import passages

QUERY = "how does autovacuum decide when a table needs a worker"


@contextmanager
def held(path: str | None):
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def timed(conn, sql: str, args=(), repeat: int = 1) -> float:
    """Median seconds of `repeat` runs of a statement (rows fetched)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        cursor = conn.execute(sql, args)
        if cursor.description:
            cursor.fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/opt/hybrid_search/models/random-bge-m3-full")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--sizes", default="10,20,50", help="shortlist sizes N to re-rank")
    parser.add_argument("--write-passages", type=int, default=8, help="per write measurement")
    parser.add_argument("--repeat", type=int, default=5, help="runs per stored-vector timing")
    parser.add_argument("--lock", help="flock this file while installing and creating")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    layout = Layout.from_environment()
    texts = passages(args.model, max(sizes) + args.write_passages)
    rows: list[tuple[str, str]] = []
    with ExitStack() as stack:
        with held(args.lock):
            dsn = stack.enter_context(scratch_database(layout, args.model))
        conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        conn.execute(
            "select hybrid_search_configure(num_threads => 2, dtype => %s, batch_size => 8)",
            [args.dtype],
        )
        conn.execute("select embed_dense('warm up')")
        # writes: the same number of passages without and with ColBERT vectors
        extra = texts[max(sizes) :]
        off = timed(conn, "insert into documents (content) select unnest(%s::text[])", [extra])
        conn.execute("truncate documents")
        conn.execute("select hybrid_search_configure(colbert_store => true)")
        on = timed(conn, "insert into documents (content) select unnest(%s::text[])", [extra])
        conn.execute("truncate documents")
        n = len(extra)
        rows.append((f"INSERT of {n} passages, colbert_store off, s per passage", f"{off / n:.2f}"))
        rows.append((f"INSERT of {n} passages, colbert_store on, s per passage", f"{on / n:.2f}"))

        corpus = texts[: max(sizes)]
        conn.execute("insert into documents (content) select unnest(%s::text[])", [corpus])
        conn.execute("select hybrid_search_refresh()")
        tokens, raw, stored = conn.execute(
            "select avg(octet_length(colbert) / 2048.0), avg(octet_length(colbert)),"
            " avg(pg_column_size(colbert)) from documents"
        ).fetchone()
        dense, sparse, content = conn.execute(
            "select avg(pg_column_size(dense)), avg(pg_column_size(sparse)),"
            " avg(pg_column_size(content)) from documents"
        ).fetchone()
        rows.append(("tokens per passage (ColBERT vectors)", f"{tokens:.0f}"))
        rows.append(("documents.colbert per passage, bytes (float16)", f"{raw:,.0f}"))
        rows.append(
            ("documents.colbert per passage on disk (TOAST, pglz), bytes", f"{stored:,.0f}")
        )
        rows.append(
            (
                "for comparison: dense / sparse / content per passage, bytes",
                f"{dense:,.0f} / {sparse:,.0f} / {content:,.0f}",
            )
        )
        rows.append(
            ("int8 with a float32 scale per token would be, bytes", f"{tokens * 1028:,.0f}")
        )

        # latency: the query is embedded (all three heads) and cached first, so every
        # timing below is the search itself
        conn.execute("select _colbert_query(%s)", [QUERY])
        plain = timed(conn, "select * from hybrid_search(%s, 10)", [QUERY], args.repeat)
        rows.append(("hybrid_search k=10, no re-ranking (query cached), ms", f"{plain * 1000:.0f}"))
        for size in sizes:
            t = timed(
                conn,
                "select * from hybrid_search(%s, 10, colbert_rerank => %s)",
                [QUERY, size],
                args.repeat,
            )
            rows.append(
                (
                    f"hybrid_search k=10, colbert_rerank => {size}, stored vectors, ms",
                    f"{t * 1000:.0f} (+{(t - plain) * 1000:.0f})",
                )
            )
        conn.execute("update documents set colbert = null")
        for size in sizes:
            t = timed(
                conn, "select * from hybrid_search(%s, 10, colbert_rerank => %s)", [QUERY, size]
            )
            rows.append(
                (
                    f"hybrid_search k=10, colbert_rerank => {size}, recomputed vectors, s",
                    f"{t:.1f} (+{t - plain:.1f})",
                )
            )
    print(f"model {args.model}, dtype {args.dtype}, num_threads 2, batch_size 8\n")
    print_table(rows)


if __name__ == "__main__":
    main()
