"""Embedding cost on the write path: model load per backend, and per-row cost
of single-row INSERTs against one 1,000-row INSERT ... SELECT.

Runs a throwaway cluster like the tests do. Usage (after `make test` or
`hybrid-search setup`):

    .venv/bin/python bench/embedding_cost.py [--model DIR] [--rows 1000] [--singles 100]

Without --model it uses the model `hybrid-search setup` installed.
"""

import argparse
import statistics
import time
from pathlib import Path

import psycopg
from common import print_table, scratch_database
from hybrid_search_installer import models
from hybrid_search_installer.layout import Layout

TEXT = (
    "Ticket {i}: the nightly report on the orders table timed out after the statement_timeout of "
    "30 seconds; the planner chose a sequential scan because statistics were stale."
)


def measure(dsn: str, rows: int, singles: int, backends: int) -> list[tuple[str, str]]:
    results = []
    loads, firsts = [], []
    for _ in range(backends):
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute("select embed_dense('warm up')")
            firsts.append(time.perf_counter() - started)
            loads.append(
                conn.execute("select load_seconds from hybrid_search_model_stats()").fetchone()[0]
            )
    results.append(
        (
            "first call in a new backend (import + load + embed), median s",
            f"{statistics.median(firsts):.2f}",
        )
    )
    results.append(
        (
            "  of which model load (load_seconds), median s",
            f"{statistics.median(loads):.2f}",
        )
    )

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select embed_dense('warm up')")
        conn.execute("truncate documents")
        started = time.perf_counter()
        for i in range(singles):
            conn.execute("insert into documents (content) values (%s)", [TEXT.format(i=i)])
        single = (time.perf_counter() - started) / singles
        conn.execute("truncate documents")
        calls = conn.execute("select encode_calls from hybrid_search_model_stats()").fetchone()[0]
        started = time.perf_counter()
        conn.execute(
            "insert into documents (content) select replace(%s, '{i}', i::text)"
            " from generate_series(1, %s) i",
            [TEXT, rows],
        )
        batch = (time.perf_counter() - started) / rows
        calls = (
            conn.execute("select encode_calls from hybrid_search_model_stats()").fetchone()[0]
            - calls
        )
        batch_size = conn.execute("select batch_size from hybrid_search_settings").fetchone()[0]
    results.append(
        (f"single-row INSERT, ms per row ({singles} statements)", f"{single * 1000:.2f}")
    )
    results.append((f"{rows}-row INSERT ... SELECT, ms per row", f"{batch * 1000:.2f}"))
    results.append(("single / batch cost ratio", f"{single / batch:.1f}x"))
    results.append((f"model calls for the {rows}-row INSERT (batch_size {batch_size})", str(calls)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the one setup installed)")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=100)
    parser.add_argument("--backends", type=int, default=3)
    args = parser.parse_args()
    layout = Layout.from_environment()
    model = Path(args.model or models.installed_model(layout)["model"])
    with scratch_database(layout, str(model)) as dsn:
        rows = measure(dsn, args.rows, args.singles, args.backends)
    print(f"model: {model}")
    print_table(rows)


if __name__ == "__main__":
    main()
