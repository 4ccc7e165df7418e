"""The demo: a small corpus and the PostgreSQL manual (one document per section)
loaded into the local cluster, and a few queries."""

import json
import os
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from . import manual_corpus, report, system

CORPUS = Path(__file__).with_name("demo_corpus.jsonl")
QUERIES = [
    ("how do I create an index without blocking writes", None),
    ("ERR_CONN_REFUSED", None),
    ("unique_violation 23505", None),
    ("pg_stat_statements", {"source": manual_corpus.PACKAGE}),
    ("which statements are slow", {"topic": "monitoring"}),
]


def ensure_manual() -> None:
    """Debian's PostgreSQL manual (HTML), the demo's larger corpus."""
    if manual_corpus.MANUAL.is_dir():
        report.done(f"system package {manual_corpus.PACKAGE} (demo corpus)")
        return
    report.changing(f"system package {manual_corpus.PACKAGE} (demo corpus)")
    system.apt_install(manual_corpus.PACKAGE)


def load_corpus(dsn: str) -> int:
    """Insert the small corpus and the manual's sections unless they are all there already."""
    return _insert(
        dsn,
        "demo",
        lambda: [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()],
    ) + _insert(dsn, manual_corpus.PACKAGE, manual_corpus.documents)


def _insert(dsn: str, source: str, rows) -> int:
    """One INSERT per core, each embedded in batches by its own backend (a backend embeds on
    one thread by default). A partial load from an interrupted run is replaced."""
    rows = rows()
    with psycopg.connect(dsn, autocommit=True) as conn:
        present = conn.execute(
            "select count(*) from documents where metadata->>'source' = %s", [source]
        ).fetchone()[0]
        if present == len(rows):
            return 0
        if present:
            conn.execute("delete from documents where metadata->>'source' = %s", [source])
    workers = min(os.cpu_count() or 1, max(1, len(rows) // 100))
    with ThreadPoolExecutor(workers) as pool:
        list(
            pool.map(
                lambda part: _insert_part(dsn, part), [rows[i::workers] for i in range(workers)]
            )
        )
    return len(rows)


def _insert_part(dsn: str, rows) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into documents (content, metadata)"
            " select c, m from unnest(%s::text[], %s::jsonb[]) as t (c, m)",
            [[r["content"] for r in rows], [json.dumps(r["metadata"]) for r in rows]],
        )


def _cell(value, digits=3):
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def run(dsn: str, model: dict) -> None:
    print()
    if model["kind"] == "test":
        print(
            "NOTE: running on the tiny RANDOM test model, not BGE-M3: dense and sparse ranks\n"
            "      are noise; the keyword leg is real.\n"
            "      `hybrid-search setup --model DIR` installs BGE-M3."
        )
    ensure_manual()
    print("loading the corpus (the manual's sections are embedded as they are inserted)")
    loaded = load_corpus(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        total = conn.execute("select count(*) from documents").fetchone()[0]
        print(f"corpus: {total} documents ({loaded} loaded now), model {model['model']}")
        conn.execute("select hybrid_search_refresh()")
        for query, filter_ in QUERIES:
            rows = conn.execute(
                "select id, score, dense_rank, dense_score, sparse_rank, sparse_score,"
                " keyword_rank, keyword_score, content"
                " from hybrid_search(%s, 5, filter => %s::jsonb)",
                [query, json.dumps(filter_) if filter_ else None],
            ).fetchall()
            where = f"  filter {json.dumps(filter_)}" if filter_ else ""
            print(f"\nSELECT * FROM hybrid_search('{query}', 5){where}")
            legs = "  ".join(f"{name:>11}" for name in ("dense", "sparse", "keyword"))
            print(f"{'#':>2} {'id':>4} {'score':>6}  {legs}  content")
            for i, (doc_id, score, dr, ds, sr, ss, kr, ks, content) in enumerate(rows, 1):
                legs = "  ".join(
                    f"{_cell(r):>3} {_cell(s):>7}" for r, s in ((dr, ds), (sr, ss), (kr, ks))
                )
                print(f"{i:>2} {doc_id:>4} {score:.4f}  {legs}  {textwrap.shorten(content, 60)}")
