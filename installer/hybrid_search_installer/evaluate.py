"""`hybrid-search eval DIR`: a BEIR-format collection through the real extension.

The collection (corpus.jsonl, queries.jsonl, qrels.tsv or qrels/test.tsv) is
loaded into a scratch database on a throwaway cluster, embedded by the
installed models in the writing transaction, vacuumed, indexed with
hybrid_search_refresh(), and scored by hybrid_search_evaluate(): nDCG@k,
recall@k and MRR@k for every leg and fusion.
"""

import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import psycopg

from . import database
from .cluster import Cluster
from .layout import Layout


def read_collection(directory: Path):
    """(corpus rows (doc id, text), queries (id, text), qrels (query id, doc id, relevance))."""
    corpus = []
    with (directory / "corpus.jsonl").open() as f:
        for line in f:
            doc = json.loads(line)
            # title and text joined as BEIR's dense models see them
            text = " ".join(p for p in (doc.get("title"), doc.get("text")) if p)
            corpus.append((str(doc["_id"]), text))
    with (directory / "queries.jsonl").open() as f:
        queries = [(str(q["_id"]), q["text"]) for q in map(json.loads, f)]
    qrels_path = next(
        (p for p in (directory / "qrels.tsv", directory / "qrels" / "test.tsv") if p.exists()),
        None,
    )
    if qrels_path is None:
        raise SystemExit(f"hybrid-search eval: no qrels.tsv or qrels/test.tsv in {directory}")
    with qrels_path.open() as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows)
        if header[0].isdigit():  # no header line
            rows = [header, *rows]
        qrels = [(q, d, int(float(r))) for q, d, r in rows]
    return corpus, queries, qrels


def doc_numbers(corpus) -> dict[str, int]:
    """documents.id per collection id: the id itself when every id is a number."""
    if all(d.isdigit() and 0 < int(d) < 2**62 for d, _ in corpus):
        return {d: int(d) for d, _ in corpus}
    return {d: i for i, (d, _) in enumerate(corpus, start=1)}


def load(conn, corpus, queries, qrels) -> None:
    numbers = doc_numbers(corpus)
    with conn.cursor().copy("copy documents (id, content) from stdin") as copy:
        for doc_id, text in corpus:
            copy.write_row((numbers[doc_id], text))
    conn.execute("create table eval_queries (id text primary key, query text not null)")
    with conn.cursor().copy("copy eval_queries from stdin") as copy:
        for row in queries:
            copy.write_row(row)
    conn.execute("create table eval_qrels (query_id text, doc_id bigint, relevance integer)")
    with conn.cursor().copy("copy eval_qrels from stdin") as copy:
        for q, d, r in qrels:
            if d in numbers:
                copy.write_row((q, numbers[d], r))


def evaluate(conn, k: int, candidates: int, rrf_k: int) -> list[tuple]:
    return conn.execute(
        "select method, judged, ndcg, recall, mrr from hybrid_search_evaluate("
        "'eval_queries', 'eval_qrels', k => %s, candidates => %s, rrf_k => %s)",
        [k, candidates, rrf_k],
    ).fetchall()


def format_table(rows, k: int) -> str:
    lines = [
        f"| method | judged queries | nDCG@{k} | recall@{k} | MRR@{k} |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {m} | {q} | {n:.3f} | {r:.3f} | {mrr:.3f} |" for m, q, n, r, mrr in rows]
    return "\n".join(lines)


def run(
    layout: Layout, record: dict, directory: Path, k: int, candidates: int, rrf_k: int
) -> tuple[list[tuple], list[str]]:
    """Load, embed, index and evaluate on a throwaway cluster with the models of record
    (models.ensure_model); prints progress and the table. Returns (rows, notes printed)."""
    corpus, queries, qrels = read_collection(directory)
    scratch = Path(tempfile.mkdtemp(prefix="hybrid_search_eval_"))
    scratch.chmod(0o755)  # the server's OS user must reach the cluster directory
    cluster = Cluster(scratch / "cluster", port=5432)
    try:
        cluster.init()
        cluster.preload(layout.venv)
        cluster.start()
        database.recreate_database(cluster.dsn("postgres"), "hybrid_search_eval")
        dsn = cluster.dsn("hybrid_search_eval")
        database.ensure_extension(
            dsn, layout, record["model"], record.get("dense_model"), record.get("sparse_model")
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            # a scratch server of our own: embed with every core
            conn.execute("select hybrid_search_configure(num_threads => %s)", [os.cpu_count()])
            started = time.monotonic()
            load(conn, corpus, queries, qrels)
            loaded = time.monotonic()
            notes = [f"loaded and embedded {len(corpus)} documents in {loaded - started:.0f} s"]
            print(notes[-1])
            # embedding on write updated every row once: VACUUM leaves one version each, so
            # the BM25 index's statistics count every document once (as after a refresh)
            conn.execute("vacuum analyze documents")
            conn.execute("select hybrid_search_refresh()")
            rows = evaluate(conn, k, candidates, rrf_k)
            notes.append(f"evaluated {len(queries)} queries in {time.monotonic() - loaded:.0f} s")
            print(notes[-1])
            models_used = conn.execute(
                "select dense_model, sparse_model from hybrid_search_settings"
            ).fetchone()
        notes += [f"dense model {models_used[0]}", f"sparse model {models_used[1]}"]
        print("\n".join(notes[-2:]))
        print(format_table(rows, k))
        return rows, notes
    finally:
        cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
