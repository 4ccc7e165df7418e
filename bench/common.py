"""What the benchmarks share: a throwaway cluster with the extension, and a table printer."""

import argparse
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from hybrid_search_installer import database, extension_files
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout


@contextmanager
def scratch_database(
    layout: Layout, model: str, conf: str = "", preload: bool = True
) -> Iterator[str]:
    """The DSN of a database with the extension configured for model, on a cluster
    in a temporary directory (postgresql.conf + conf; preloading the model stack
    unless preload is false) that is destroyed afterwards. The extension's files
    are rebuilt and installed first if they differ from the tree's: a benchmark
    never measures a stale library."""
    extension_files.ensure_extension_files(layout)
    scratch = Path(tempfile.mkdtemp(prefix="hybrid_search_bench_"))
    scratch.chmod(0o755)
    cluster = Cluster(scratch / "cluster", port=5432)
    try:
        cluster.init()
        if preload:
            cluster.preload(layout.venv)
        with (cluster.data / "postgresql.conf").open("a") as f:
            f.write(conf)
        cluster.start()
        database.recreate_database(cluster.dsn("postgres"), "bench")
        dsn = cluster.dsn("bench")
        database.ensure_extension(dsn, layout, model)
        yield dsn
    finally:
        cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)


def add_huge_pages_argument(parser: argparse.ArgumentParser) -> None:
    """--huge-pages, for a script that makes its cluster (use_huge_pages)."""
    parser.add_argument(
        "--huge-pages",
        action="store_true",
        help="the cluster's shared memory on huge pages the kernel has reserved (common.py)",
    )


def use_huge_pages(cluster: Cluster) -> None:
    """Put the cluster's shared memory on the kernel's reserved huge pages
    (huge_pages = on: 2 MB pages, so a backend walking shared buffers misses the
    TLB far less), after checking that enough are free, as the server would not
    start otherwise. Reserving them is the operator's step (docs/operations.md,
    Huge pages); a benchmark never changes the kernel's settings."""
    cluster.configure({"huge_pages": "on"}, "benchmark: --huge-pages")
    needed = int(cluster.setting("shared_memory_size_in_huge_pages"))
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    free = int(meminfo["HugePages_Free"])
    if free < needed:
        raise SystemExit(
            f"--huge-pages: the cluster needs {needed} huge pages and the kernel has {free} free;"
            f" reserve them first, as root: sysctl -w vm.nr_hugepages={needed}"
        )


def print_table(
    rows: list[tuple[str, ...]], header: tuple[str, ...] = ("measure", "value")
) -> None:
    """A Markdown table: the measure, then one column per value."""
    width = max(len(row[0]) for row in [header, *rows])
    print(f"| {header[0]:<{width}} | " + " | ".join(header[1:]) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(h) + 2) for h in header[1:]) + "|")
    for name, *values in rows:
        print(f"| {name:<{width}} | " + " | ".join(values) + " |")


# the query a cold backend embeds first (model_memory.py, preload.py)
QUERY = "how do I create an index without blocking writes on a busy table"


def first_calls(dsn: str, n: int) -> tuple[list[psycopg.Connection], list[float]]:
    """n new backends embed QUERY at once: their connections, left open, and the
    seconds each one's first embed_dense took."""
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(n)]
    times = [0.0] * n

    def first_call(i):
        started = time.perf_counter()
        conns[i].execute("select embed_dense(%s)", [QUERY])
        times[i] = time.perf_counter() - started

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return conns, times


def rollup(pid: int) -> dict[str, float]:
    """/proc/<pid>/smaps_rollup of a process, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, kb, *_ = line.split()
        values[name.rstrip(":")] = int(kb) / 1024
    return values
