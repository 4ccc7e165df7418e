"""Preloading the model stack in the postmaster, against importing it in every
backend: memory of the whole server, first-call time, connection cost.

Both servers run in one run, one after the other, with the same model (the
full-size random BGE-M3 by default; see model_memory.py). Memory is read from
/proc/<pid>/smaps_rollup of every server process, the postmaster included,
while n backends that have each embedded a query stay connected. Usage (after
`make test` or `hybrid-search setup`):

    .venv/bin/python bench/preload.py [--backends 1,4,16] [--model DIR]
"""

import argparse
import statistics
import time
from pathlib import Path

import psycopg
from common import first_calls, print_table, rollup, scratch_database
from hybrid_search_installer.layout import Layout
from hybrid_search_tools.random_model import generate


def server_pids(backend_pid: int) -> tuple[int, list[int]]:
    """The postmaster of a backend and all of its children."""
    postmaster = int(Path(f"/proc/{backend_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return postmaster, [int(c) for c in children]


def embedding_backends(dsn: str, n: int) -> list[tuple]:
    """n new backends embed a query at once; memory while they stay connected."""
    conns, times = first_calls(dsn, n)
    pids = [c.execute("select pg_backend_pid()").fetchone()[0] for c in conns]
    postmaster, children = server_pids(pids[0])
    server = [rollup(p) for p in [postmaster, *children]]
    backends = [rollup(p) for p in pids]
    for c in conns:
        c.close()
    private = [b["Private_Clean"] + b["Private_Dirty"] for b in backends]
    return [
        (
            f"{n} backends at once: first embed_dense, median / max s",
            f"{statistics.median(times):.2f} / {max(times):.2f}",
        ),
        (f"{n} backends: private memory per backend (mean), MB", f"{statistics.mean(private):.0f}"),
        (
            f"{n} backends: PSS of the whole server (postmaster, backends, the rest), MB",
            f"{sum(s['Pss'] for s in server):.0f}",
        ),
        (f"{n} backends: postmaster RSS, MB", f"{server[0]['Rss']:.0f}"),
    ]


def connection_cost(dsn: str, repeats: int = 30) -> tuple[str, str]:
    """Median time to connect, run SELECT 1 and disconnect (a backend that never
    embeds): what preloading adds to every connection is the fork of a larger
    postmaster."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        with psycopg.connect(dsn) as conn:
            conn.execute("select 1")
        seconds.append(time.perf_counter() - started)
        time.sleep(0.2)  # let the previous backend exit first
    return (
        "connect + SELECT 1 + disconnect, median ms",
        f"{statistics.median(seconds) * 1000:.1f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="1,4,16")
    parser.add_argument("--model", type=Path, help="an existing full-size model directory")
    args = parser.parse_args()
    layout = Layout.from_environment()
    model_dir = args.model or generate(layout.models / "random-bge-m3-full", size="full", seed=0)
    results = {}
    for preload in (False, True):
        rows = []
        with scratch_database(layout, str(model_dir), "max_connections = 40\n", preload) as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("select hybrid_search_configure(num_threads => 2)")
            rows.append(connection_cost(dsn))
            for n in (int(x) for x in args.backends.split(",")):
                rows.extend(embedding_backends(dsn, n))
        results[preload] = rows
    print(f"model: {model_dir}\n")
    print_table(
        [
            (name, off, on)
            for (name, off), (_, on) in zip(results[False], results[True], strict=True)
        ],
        header=("measure", "each backend imports", "preloaded"),
    )


if __name__ == "__main__":
    main()
