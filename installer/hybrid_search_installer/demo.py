"""The demo: a small corpus and the PostgreSQL manual (one document per section)
loaded into the local cluster, and a few queries."""

import json
import os
import queue
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from . import manual_corpus, report, system

CORPUS = Path(__file__).with_name("demo_corpus.jsonl")
# the manual's pages a first demo loads (about 800 of its 3,200 sections): the SQL
# command reference and the chapters the queries below ask about
FIRST_PAGES = ("sql-", "monitoring", "pgstatstatements", "indexes", "errcodes", "mvcc", "routine")
# rows per INSERT: a few model batches, and a step of the progress bar
CHUNK_ROWS = 48
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


def load_corpus(dsn: str, whole_manual: bool) -> int:
    """Insert the small corpus and the manual's sections (its first part unless
    whole_manual) that are not there yet; returns how many were inserted now."""
    small = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    sections = manual_corpus.documents()
    if not whole_manual:
        sections = [s for s in sections if s["metadata"]["page"].startswith(FIRST_PAGES)]
    return _insert(dsn, "demo", small) + _insert(dsn, manual_corpus.PACKAGE, sections)


def _insert(dsn: str, source: str, rows: list[dict]) -> int:
    """Insert the rows not there yet (by source and content) in chunks, one backend per
    core taking chunks in turn (a backend embeds on one thread), with a progress bar.
    Each chunk commits alone: an interrupted load is resumed, never repeated."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        present = {
            content
            for (content,) in conn.execute(
                "select content from documents where metadata->>'source' = %s", [source]
            )
        }
    missing = [r for r in rows if r["content"] not in present]
    if not missing:
        return 0
    chunks = queue.SimpleQueue()
    for i in range(0, len(missing), CHUNK_ROWS):
        chunks.put(missing[i : i + CHUNK_ROWS])
    progress = report.Progress(len(missing))
    workers = min(os.cpu_count() or 1, chunks.qsize())
    with ThreadPoolExecutor(workers) as pool:
        for result in [pool.submit(_insert_chunks, dsn, chunks, progress) for _ in range(workers)]:
            result.result()
    progress.finish()
    return len(missing)


def _insert_chunks(dsn: str, chunks: queue.SimpleQueue, progress: report.Progress) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            try:
                rows = chunks.get_nowait()
            except queue.Empty:
                return
            conn.execute(
                "insert into documents (content, metadata)"
                " select c, m from unnest(%s::text[], %s::jsonb[]) as t (c, m)",
                [[r["content"] for r in rows], [json.dumps(r["metadata"]) for r in rows]],
            )
            progress.advance(len(rows))


def _cell(value, digits=3):
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def run(dsn: str, model: dict, whole_manual: bool = False) -> None:
    print()
    if model["kind"] == "test":
        print(
            "NOTE: running on the tiny RANDOM test model, not BGE-M3: dense and sparse ranks\n"
            "      are noise; the keyword leg is real.\n"
            "      `hybrid-search setup --model DIR` installs BGE-M3."
        )
    ensure_manual()
    part = "all of the manual" if whole_manual else "the first part of the manual"
    print(f"loading the corpus: a small one and {part}, embedded as they are inserted")
    loaded = load_corpus(dsn, whole_manual)
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
    if not whole_manual:
        print(
            "\nThe demo loaded the SQL reference and a few chapters of the manual."
            " `hybrid-search demo --whole-manual` loads the other sections too"
            " (about 2,400 more, some 4 minutes on 2 cores)."
        )
