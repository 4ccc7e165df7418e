"""Backend CPU per query of two or more builds of the extension's library, in
alternating rounds on one kept cluster: what a change to the C scan saves.

The cluster is one that scan_legs.py (or retrieval.py) left running with --keep,
loaded from the same seed. Each round installs each build in turn into the
PostgreSQL copy the cluster runs (copied beside it, then renamed over it, so that
running backends keep the file they mapped), opens a new connection, runs 5
untimed queries (and stops if the backend has not mapped the installed file: the
cluster runs another HYBRID_SEARCH_HOME's PostgreSQL) and then the 200 timed
queries of each leg, and reads the backend's time on a CPU around each query
from /proc/<pid>/schedstat (the cluster is local): the machine's other load
disturbs that far less than the wall clock. It prints, per
leg and build, the medians over the rounds of the mean and the p95 of those
times, and whether each build returned the first build's rows. The library installed
before the run is put back at the end. With --variant (settings such as
hybrid_search.sparse_skip_lists=off, comma-separated), each build runs under each
variant too: a column per build and variant. With --k the queries ask for k rows
(hybrid_search asks each leg for 100).

    .venv/bin/python bench/scan_legs.py --docs 100000 --keep --no-peers
    cp extension/hybrid_search.so /tmp/after.so      # and a build of the base as /tmp/before.so
    .venv/bin/python bench/builds.py --dsn "<the kept dsn>" /tmp/before.so /tmp/after.so
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import psycopg
from corpus import Corpus
from hybrid_search_installer.layout import Layout, pg_config
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb
from retrieval import TENANT, K, bm25_leg, dense_leg, hybrid_leg, sparse_leg

# each leg: its SQL (retrieval.py) and its metadata filter (None: none)
LEGS = {
    "sparse": (sparse_leg, None),
    "sparse, 10% filter": (sparse_leg, {"tenant": TENANT}),
    "BM25": (bm25_leg, None),
    "BM25, 10% filter": (bm25_leg, {"tenant": TENANT}),
    "hybrid_search": (hybrid_leg, None),
}


def installed_library() -> Path:
    libdir = subprocess.run(
        [pg_config(), "--pkglibdir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Layout.from_environment().postgres_root / libdir.lstrip("/") / "hybrid_search.so"


def install(build: Path, target: Path) -> None:
    staged = target.with_name(target.name + ".bench")
    shutil.copyfile(build, staged)
    staged.chmod(0o755)
    os.replace(staged, target)


def backend_cpu_ns(conn) -> int:
    """The backend's time on a CPU so far, in ns: precise enough for one query."""
    return int(Path(f"/proc/{conn.info.backend_pid}/schedstat").read_text().split()[0])


def mapped_libraries(conn) -> set[str]:
    """The hybrid_search.so files the connection's backend has mapped."""
    maps = Path(f"/proc/{conn.info.backend_pid}/maps").read_text().splitlines()
    return {line.split(maxsplit=5)[-1] for line in maps if "hybrid_search.so" in line}


def cpu_per_query(dsn, sql, params, variant, library):
    """(mean and p95 of the backend's CPU ms per query, the rows) of one pass in a
    new connection with the variant's settings, whose backend runs library."""
    options = " ".join(f"-c {setting}" for setting in variant.split(",") if setting)
    with psycopg.connect(dsn, autocommit=True, options=options) as conn:
        register_vector(conn)
        for p in params[:5]:
            conn.execute(sql, p, prepare=True).fetchall()
        # a cluster run from another PostgreSQL copy than HYBRID_SEARCH_HOME's
        # would time the same library in every column
        mapped = mapped_libraries(conn)
        if str(library.resolve()) not in mapped:
            raise SystemExit(
                f"the cluster's backend has not loaded {library} but {mapped}:"
                " set HYBRID_SEARCH_HOME to the home whose PostgreSQL runs the cluster"
            )
        times, rows = [], []
        for p in params:
            started = backend_cpu_ns(conn)
            rows.append(conn.execute(sql, p, prepare=True).fetchall())
            times.append((backend_cpu_ns(conn) - started) / 1e6)
        return statistics.fmean(times), statistics.quantiles(times, n=20)[18], rows


def parse_kept_cluster_arguments(
    parser: argparse.ArgumentParser, rounds: int
) -> argparse.Namespace:
    """Adds what every comparison on a kept cluster takes (this script, restarts.py)
    to parser's own arguments, and parses them."""
    parser.add_argument(
        "--dsn", required=True, help="a cluster retrieval.py or scan_legs.py kept (--keep)"
    )
    parser.add_argument("--docs", type=int, default=100_000, help="the kept cluster's corpus")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--k", type=int, default=K, help="rows each query asks for")
    args = parser.parse_args()
    if args.queries < 2:
        parser.error("--queries: at least 2 (a p95 needs two queries)")
    return args


class Comparison:
    """Each leg's (mean, p95) per round under each column, and whether the column
    returned the first column's rows."""

    def __init__(self, legs: dict, columns: list, args: argparse.Namespace):
        with psycopg.connect(args.dsn) as conn:
            has_dense_index = conn.execute(
                "select to_regclass('documents_dense_idx') is not null"
            ).fetchone()[0]
        # a cluster scan_legs.py kept has no dense index: its dense leg would be an exact scan
        self.legs = {
            name: (leg, metadata)
            for name, (leg, metadata) in legs.items()
            if has_dense_index or leg not in (dense_leg, hybrid_leg)
        }
        self.columns, self.args = columns, args
        self.corpus = Corpus(args.docs, args.queries)
        self.cpu = {(name, c): [] for name in self.legs for c in columns}
        self.same = {(name, c): True for name in self.legs for c in columns}
        self.reference = {}  # each leg's rows under the first column

    def time_legs(self, column, variant: str, library: Path) -> None:
        """One round of every leg under column, in new connections with variant's settings."""
        a = self.args
        for name, (leg, metadata) in self.legs.items():
            sql, params = leg(self.corpus, a.k, Jsonb(metadata) if metadata else None)
            mean, p95, rows = cpu_per_query(
                a.dsn, sql, [params(q) for q in range(a.queries)], variant, library
            )
            self.cpu[name, column].append((mean, p95))
            self.same[name, column] &= rows == self.reference.setdefault(name, rows)

    def print(self, labels: list[str], note: str = "") -> None:
        print(f"| leg | {' | '.join(labels)} |")
        print(f"|---|{'---|' * len(labels)}")
        for name in self.legs:
            cells = [
                " / ".join(
                    f"{statistics.median(m):.2f}" for m in zip(*self.cpu[name, c], strict=True)
                )
                + ("" if self.same[name, c] else " (other rows)")
                for c in self.columns
            ]
            print(f"| {name} | {' | '.join(cells)} |")
        print(
            f"\nbackend CPU ms per query (k = {self.args.k}), mean / p95, medians of"
            f" {self.args.rounds} rounds of {self.args.queries} queries{note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        action="append",
        help="settings a column runs under, name=value[,name=value]; repeat for more",
    )
    parser.add_argument("builds", nargs="+", type=Path, help="hybrid_search.so files")
    args = parse_kept_cluster_arguments(parser, rounds=4)
    columns = [(b, v) for b in args.builds for v in args.variant or [""]]
    target = installed_library()
    comparison = Comparison(LEGS, columns, args)
    saved = Path(tempfile.mkdtemp()) / "hybrid_search.so"
    shutil.copyfile(target, saved)
    try:
        for _ in range(args.rounds):
            for build, variant in columns:
                install(build, target)
                comparison.time_legs((build, variant), variant, target)
    finally:
        install(saved, target)
    comparison.print([b.name + (f" ({v})" if v else "") for b, v in columns])


if __name__ == "__main__":
    main()
