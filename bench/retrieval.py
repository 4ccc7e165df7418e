"""Retrieval at scale: build times, index sizes, latency and recall of every leg.

A deterministic synthetic corpus (clustered 1024-d unit vectors, sparse
vectors over a 250,002-token vocabulary with 60-200 Zipf-drawn tokens per
document, Zipf-drawn words for full text, 10 tenants in metadata) is COPYed
into a throwaway cluster with its vectors supplied, so no model is in the
loop and query embedding is excluded. Every figure comes from one run, so
each is also a ratio against the baselines measured next to it: pgvector's
exact `<#>` scan, a plain postings join, the table-based inverted index and an
exact numpy brute force (in this process) for the sparse leg, the exact scan
for the dense leg. The sparse leg proper is the sparse_inverted index access
method (documents_sparse_idx), timed as the plain `ORDER BY sparse <#> q
LIMIT 10` and through sparse_search, unfiltered, with a 10% filter and for a
row-level-security role that sees 10%, and again after 20% of the rows are
rewritten (before and after VACUUM). The BM25 leg is the same access method over
fts (documents_fts_bm25_idx), timed through keyword_search against
keyword_search_scan, which scores every row with the same statistics.

    .venv/bin/hybrid-search bench --docs 100000
    .venv/bin/python bench/retrieval.py --docs 100000 [--queries 200] [--save]
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from hybrid_search_installer import database
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout, pg_bin
from pgvector import SparseVector
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

DIM, VOCAB, WORDS, TENANTS, CLUSTERS = 1024, 250_002, 20_000, 10, 200
RESULTS = Path(__file__).with_name("results")


# --------------------------------------------------------------------------- corpus


def zipf_ids(rng, size, vocabulary, exponent=1.1):
    """Zipf-like ids in [0, vocabulary): rank r with probability ~ 1 / r**exponent."""
    return (rng.zipf(exponent, size=size) - 1) % vocabulary


class Corpus:
    """Documents and queries, generated from a seed."""

    def __init__(self, docs: int, queries: int, seed: int = 7):
        rng = np.random.default_rng(seed)
        self.n = docs
        centroids = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
        assign = rng.integers(0, CLUSTERS, docs)
        dense = centroids[assign] + 0.6 * rng.standard_normal((docs, DIM)).astype(np.float32)
        self.dense = dense / np.linalg.norm(dense, axis=1, keepdims=True)
        self.sparse = [self._sparse_vector(rng, rng.integers(60, 201)) for _ in range(docs)]
        self.words = [zipf_ids(rng, rng.integers(30, 81), WORDS, 1.2) for _ in range(docs)]
        self.tenant = np.arange(docs) % TENANTS

        q_assign = rng.integers(0, CLUSTERS, queries)
        q = centroids[q_assign] + 0.8 * rng.standard_normal((queries, DIM)).astype(np.float32)
        self.q_dense = q / np.linalg.norm(q, axis=1, keepdims=True)
        self.q_sparse = [self._sparse_vector(rng, rng.integers(5, 16)) for _ in range(queries)]
        # two words of a random document: AND queries that match something
        picks = rng.integers(0, docs, queries)
        self.q_text = [
            " ".join(f"w{w}" for w in rng.choice(self.words[p], 2, replace=False)) for p in picks
        ]

    @staticmethod
    def _sparse_vector(rng, nnz):
        tokens = np.unique(zipf_ids(rng, nnz * 2, VOCAB))[:nnz]
        # frequent tokens weigh less, as BGE-M3's stop words do
        weights = rng.gamma(2.0, 0.08, tokens.size) * np.where(tokens < 100, 0.3, 1.0)
        return tokens.astype(np.int32), np.clip(weights, 0.01, 0.9).astype(np.float32)

    def text(self, i):
        return " ".join(f"w{w}" for w in self.words[i])

    # exact references -----------------------------------------------------------

    def exact_dense(self, qi, k, allowed=None):
        scores = self.dense @ self.q_dense[qi]
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        top = np.lexsort((np.arange(self.n), -scores))[:k]
        return [int(i) + 1 for i in top if np.isfinite(scores[i])]

    def build_postings(self):
        docs = np.concatenate([np.full(t.size, i + 1) for i, (t, _) in enumerate(self.sparse)])
        tokens = np.concatenate([t for t, _ in self.sparse])
        weights = np.concatenate([w for _, w in self.sparse])
        order = np.argsort(tokens, kind="stable")
        self.p_docs, self.p_tokens, self.p_weights = docs[order], tokens[order], weights[order]
        self.p_starts = np.searchsorted(self.p_tokens, np.arange(VOCAB + 1))

    def exact_sparse(self, qi, k, allowed=None):
        scores = np.zeros(self.n + 1)
        for t, w in zip(*self.q_sparse[qi], strict=True):
            a, b = self.p_starts[t], self.p_starts[t + 1]
            scores[self.p_docs[a:b]] += self.p_weights[a:b].astype(np.float64) * float(w)
        if allowed is not None:
            scores[1:][~allowed] = 0
        top = np.lexsort((np.arange(self.n + 1), -scores))[:k]
        return [int(i) for i in top if scores[i] > 0]


# --------------------------------------------------------------------------- running


def sparse_param(tokens, weights):
    return SparseVector(dict(zip(tokens.tolist(), weights.tolist(), strict=True)), VOCAB)


def timed(conn, sql, params_list):
    """(latencies in ms, results) of running sql once per parameter tuple, after a
    few untimed runs (plan caching, the backend's first PL/Python import)."""
    for params in params_list[:3]:
        conn.execute(sql, params, prepare=True).fetchall()
    latencies, results = [], []
    for params in params_list:
        started = time.perf_counter()
        rows = conn.execute(sql, params, prepare=True).fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
        results.append(rows)
    return latencies, results


def recall(found, expected, k=10):
    expected = expected[:k]
    if not expected:
        return 1.0
    return len(set(found[:k]) & set(expected)) / len(expected)


def percentiles(latencies):
    p = np.percentile(latencies, [50, 95, 99])
    return f"{p[0]:.1f}", f"{p[1]:.1f}", f"{p[2]:.1f}"


def relation_mb(conn, name):
    size = conn.execute("select pg_total_relation_size(%s::regclass)", [name]).fetchone()[0]
    return size / 2**20


def load(conn, corpus, ids=None):
    ids = range(corpus.n) if ids is None else ids
    with conn.cursor().copy(
        "copy documents (id, content, metadata, dense, sparse) from stdin with (format binary)"
    ) as copy:
        copy.set_types(["int8", "text", "jsonb", "vector", "sparsevec"])
        for i in ids:
            j = i % corpus.n  # extra rows (write_cost) reuse the corpus' vectors
            copy.write_row(
                (
                    i + 1,
                    corpus.text(j),
                    Jsonb({"tenant": int(corpus.tenant[j])}),
                    corpus.dense[j],
                    sparse_param(*corpus.sparse[j]),
                )
            )


def write_cost(conn, corpus, rows=2000, rounds=3):
    """Seconds to COPY rows with vectors supplied, with and without the sparse index triggers."""
    timings = {"with": [], "without": []}
    base = corpus.n * 10
    for r in range(rounds):
        for mode in ("with", "without"):
            if mode == "without":
                conn.execute("alter table documents disable trigger sparse_index_inserted")
            ids = range(base, base + rows)
            started = time.perf_counter()
            load(conn, corpus, ids)
            timings[mode].append(time.perf_counter() - started)
            conn.execute("alter table documents enable trigger sparse_index_inserted")
            conn.execute("delete from documents where id > %s", [base])
            conn.execute("delete from hybrid_search_sparse_changes where doc_id > %s", [base])
            base += rows * (r + 2)
    return statistics.median(timings["with"]), statistics.median(timings["without"])


def run(docs: int, queries: int, slow_queries: int, keep: bool = False) -> tuple[list[tuple], dict]:
    layout = Layout.from_environment()
    scratch = Path(tempfile.mkdtemp(prefix="hybrid_search_bench_"))
    scratch.chmod(0o755)
    cluster = Cluster(scratch / "cluster", port=5432)
    table, facts = [], {}
    started = time.perf_counter()
    corpus = Corpus(docs, queries)
    corpus.build_postings()
    facts["generate_s"] = time.perf_counter() - started
    try:
        cluster.init()
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = 4GB\nmaintenance_work_mem = 4GB\nmax_wal_size = 8GB\n")
            conf.write("checkpoint_timeout = 30min\nmax_parallel_maintenance_workers = 2\n")
        cluster.start()
        database.recreate_database(cluster.dsn("postgres"), "bench")
        dsn = cluster.dsn("bench")
        database.ensure_extension(dsn, layout, None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            register_vector(conn)
            conn.execute(
                f"alter table documents alter column dense type vector({DIM}),"
                f" alter column sparse type sparsevec({VOCAB})"
            )
            # built after the load, as the other indexes (and timed)
            conn.execute("drop index documents_sparse_idx")
            conn.execute("drop index documents_fts_bm25_idx")
            t = time.perf_counter()
            load(conn, corpus)
            facts["copy_s"] = time.perf_counter() - t
            conn.execute("vacuum analyze documents")
            t = time.perf_counter()
            conn.execute(
                "create index documents_sparse_idx on documents"
                " using sparse_inverted (sparse sparsevec_ip_ops)"
            )
            facts["sparse_am_build_s"] = time.perf_counter() - t
            t = time.perf_counter()
            conn.execute(
                "create index documents_fts_bm25_idx on documents"
                " using sparse_inverted (fts tsvector_bm25_ops)"
            )
            facts["bm25_am_build_s"] = time.perf_counter() - t
            t = time.perf_counter()
            conn.execute("select hybrid_search_create_dense_index()")
            facts["hnsw_build_s"] = time.perf_counter() - t
            t = time.perf_counter()
            conn.execute("select hybrid_search_refresh()")
            facts["sparse_build_s"] = time.perf_counter() - t
            t = time.perf_counter()
            create_postings_table(conn, corpus)
            facts["postings_join_build_s"] = time.perf_counter() - t
            table, extra = measure(conn, corpus, queries, slow_queries, facts)
            facts.update(extra)
    finally:
        if keep:
            print(f'kept: psql "{cluster.dsn("bench")}"')
        else:
            cluster.destroy()
            shutil.rmtree(scratch, ignore_errors=True)
    return table, facts


def create_postings_table(conn, corpus):
    """The naive baseline: one row per (token, document, weight), btree on token."""
    conn.execute("create table bench_postings (token int4, doc int8, weight float4)")
    row = np.dtype(
        [("n", ">i2"), ("l1", ">i4"), ("t", ">i4"), ("l2", ">i4"), ("d", ">i8"),
         ("l3", ">i4"), ("w", ">f4")]
    )  # fmt: skip
    with conn.cursor().copy("copy bench_postings from stdin with (format binary)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\0" + b"\0" * 8)
        for start in range(0, corpus.p_docs.size, 1_000_000):
            end = min(start + 1_000_000, corpus.p_docs.size)
            data = np.empty(end - start, row)
            data["n"], data["l1"], data["l2"], data["l3"] = 3, 4, 8, 4
            data["t"] = corpus.p_tokens[start:end]
            data["d"] = corpus.p_docs[start:end]
            data["w"] = corpus.p_weights[start:end]
            copy.write(data.tobytes())
        copy.write(b"\xff\xff")
    conn.execute("create index on bench_postings (token) include (doc, weight)")
    conn.execute("vacuum analyze bench_postings")


def rrf(lists, k=10, rrf_k=60):
    scores = {}
    for ids in lists:
        for rank, doc in enumerate(ids, 1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (rrf_k + rank)
    return [d for d, _ in sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:k]]


def measure(conn, corpus, queries, slow, facts):
    """Rows of (measure, p50, p95, p99, recall@10) and extra facts."""
    table, extra = [], {}
    fast, few = range(queries), range(min(slow, queries))
    for flt in (None, {"tenant": 3}):
        rows, ratios = measure_pass(conn, corpus, fast, few, flt)
        table += rows
        extra.update(ratios)
    table += measure_row_security(conn, corpus, fast)
    for name, relation in [
        ("documents (heap + TOAST)", "documents"),
        ("dense HNSW index", "documents_dense_idx"),
        ("full-text GIN index", "documents_fts_idx"),
        ("sparse_inverted index (documents_sparse_idx)", "documents_sparse_idx"),
        ("sparse_inverted BM25 index (documents_fts_bm25_idx)", "documents_fts_bm25_idx"),
        ("table-based sparse inverted index", "hybrid_search_sparse_postings"),
        ("plain postings table + btree (baseline)", "bench_postings"),
    ]:
        extra[f"size: {name}"] = relation_mb(conn, relation)
    with_index, without = write_cost(conn, corpus)
    extra["write_with_index_s"], extra["write_without_index_s"] = with_index, without
    table += measure_churn(conn, corpus, fast, extra)
    with_am, without_am = write_cost_am(conn, corpus)
    extra["write_with_am_s"], extra["write_without_am_s"] = with_am, without_am
    return table, extra


AM_SQL = (
    "select id from documents where sparse is not null"
    " and (%s::jsonb is null or metadata @> %s::jsonb)"
    " order by sparse <#> %s::sparsevec limit 10"
)


def sparse_recall(corpus, ids, qs, mask):
    return f"{np.mean([recall(f, corpus.exact_sparse(q, 10, mask)) for f, q in zip(ids, qs, strict=True)]):.3f}"


def measure_row_security(conn, corpus, fast):
    """The sparse_inverted leg for a role whose row-level-security policy shows it 10%."""
    conn.execute("alter table documents enable row level security")
    conn.execute("create policy bench_tenant on documents using ((metadata->>'tenant')::int = 3)")
    conn.execute("create role bench_reader")
    conn.execute("grant select on documents to bench_reader")
    conn.execute("select hybrid_search_grant('bench_reader')")
    mask = corpus.tenant == 3
    try:
        conn.execute("set role bench_reader")
        params = [(None, None, sparse_param(*corpus.q_sparse[q])) for q in fast]
        latencies, results = timed(conn, AM_SQL, params)
        ids = [[r[0] for r in rows] for rows in results]
        rows = [
            (
                "sparse, sparse_inverted index (ORDER BY <#> LIMIT 10) (RLS role seeing 10%)",
                *percentiles(latencies),
                sparse_recall(corpus, ids, fast, mask),
            )
        ]
        latencies, results = timed(
            conn,
            "select id from sparse_search(%s::sparsevec, 10)",
            [(sparse_param(*corpus.q_sparse[q]),) for q in fast],
        )
        ids = [[r[0] for r in rows] for rows in results]
        rows.append(
            (
                "sparse, sparse_search (sparse_inverted) (RLS role seeing 10%)",
                *percentiles(latencies),
                sparse_recall(corpus, ids, fast, mask),
            )
        )
        return rows
    finally:
        conn.execute("reset role")
        conn.execute("drop policy bench_tenant on documents")
        conn.execute("alter table documents disable row level security")
        conn.execute("select hybrid_search_revoke('bench_reader')")
        conn.execute("drop owned by bench_reader")
        conn.execute("drop role bench_reader")


def measure_churn(conn, corpus, fast, extra):
    """The sparse_inverted leg after 20% of the rows are rewritten (new row versions,
    old ones dead), before and after VACUUM."""
    t = time.perf_counter()
    conn.execute(
        "update documents set metadata = metadata || '{\"churned\": true}' where id % 5 = 0"
    )
    extra["churn_update_s"] = time.perf_counter() - t
    rows = []
    for label in ("after 20% churn, before VACUUM", "after 20% churn and VACUUM"):
        if "and VACUUM" in label:
            t = time.perf_counter()
            conn.execute("vacuum documents")
            extra["churn_vacuum_s"] = time.perf_counter() - t
        params = [(None, None, sparse_param(*corpus.q_sparse[q])) for q in fast]
        latencies, results = timed(conn, AM_SQL, params)
        ids = [[r[0] for r in rows] for rows in results]
        rows.append(
            (
                f"sparse, sparse_inverted index (ORDER BY <#> LIMIT 10) ({label})",
                *percentiles(latencies),
                sparse_recall(corpus, ids, fast, None),
            )
        )
    return rows


def write_cost_am(conn, corpus, rows=2000, rounds=3):
    """Seconds to COPY rows with vectors supplied, with documents_sparse_idx and
    without it (dropped at the end of the run)."""
    timings = {"with": [], "without": []}
    base = corpus.n * 20
    for mode in ("with", "without"):
        if mode == "without":
            conn.execute("drop index documents_sparse_idx")
        for _ in range(rounds):
            started = time.perf_counter()
            load(conn, corpus, range(base, base + rows))
            timings[mode].append(time.perf_counter() - started)
            base += rows
    return statistics.median(timings["with"]), statistics.median(timings["without"])


def measure_pass(conn, corpus, fast, few, flt):
    """Every query shape once, with or without the metadata filter (tenant 3 = 10%)."""
    table, extra = [], {}
    allowed = corpus.tenant == 3
    label = " (10% filter)" if flt else ""
    jflt = Jsonb(flt) if flt else None
    mask = allowed if flt else None

    def row(name, sql, params, reference, qs):
        latencies, results = timed(conn, sql, [params(q) for q in qs])
        ids = [[r[0] for r in rows] for rows in results]
        rec = (
            f"{np.mean([recall(f, reference(q)) for f, q in zip(ids, qs, strict=True)]):.3f}"
            if reference
            else "-"
        )
        table.append((name + label, *percentiles(latencies), rec))
        return latencies, ids

    dense_lat, _ = row(
        "dense, HNSW (ef_search 100)",
        "select id from dense_search(%s::vector, 10, %s::jsonb)",
        lambda q: (corpus.q_dense[q], jflt),
        lambda q: corpus.exact_dense(q, 10, mask),
        fast,
    )
    row(
        "dense, exact scan",
        "select id from documents where dense is not null and (%s::jsonb is null"
        " or metadata @> %s::jsonb) order by (dense <=> %s::vector) + 0, id limit 10",
        lambda q: (jflt, jflt, corpus.q_dense[q]),
        lambda q: corpus.exact_dense(q, 10, mask),
        few,
    )
    am_lat, _ = row(
        "sparse, sparse_inverted index (ORDER BY <#> LIMIT 10)",
        AM_SQL,
        lambda q: (jflt, jflt, sparse_param(*corpus.q_sparse[q])),
        lambda q: corpus.exact_sparse(q, 10, mask),
        fast,
    )
    sparse_lat, _ = row(
        "sparse, sparse_search (sparse_inverted index)",
        "select id from sparse_search(%s::sparsevec, 10, %s::jsonb)",
        lambda q: (sparse_param(*corpus.q_sparse[q]), jflt),
        lambda q: corpus.exact_sparse(q, 10, mask),
        fast,
    )
    old_lat, _ = row(
        "sparse, table-based inverted index (_sparse_search_index)",
        "select id from _sparse_search_index(%s::sparsevec, 10, %s::jsonb)",
        lambda q: (sparse_param(*corpus.q_sparse[q]), jflt),
        lambda q: corpus.exact_sparse(q, 10, mask),
        fast,
    )
    numpy_lat = []
    for q in fast:
        started = time.perf_counter()
        corpus.exact_sparse(q, 10, mask)
        numpy_lat.append((time.perf_counter() - started) * 1000)
    table.append(
        ("sparse, exact numpy brute force over postings (in process)" + label,
         *percentiles(numpy_lat), "1.000")
    )  # fmt: skip
    scan_lat, _ = row(
        "sparse, pgvector exact scan (<#>)",
        "select id from sparse_search_scan(%s::sparsevec, 10, %s::jsonb)",
        lambda q: (sparse_param(*corpus.q_sparse[q]), jflt),
        lambda q: corpus.exact_sparse(q, 10, mask),
        few,
    )
    join_lat, _ = row(
        "sparse, postings join",
        "select p.doc from bench_postings as p"
        " join unnest(%s::int4[], %s::float4[]) as q (token, weight) on p.token = q.token"
        " where %s::jsonb is null or exists (select from documents as d"
        "  where d.id = p.doc and d.metadata @> %s::jsonb)"
        " group by p.doc order by sum(p.weight * q.weight) desc, p.doc limit 10",
        lambda q: (*[a.tolist() for a in corpus.q_sparse[q]], jflt, jflt),
        lambda q: corpus.exact_sparse(q, 10, mask),
        few,
    )
    bm25_scan_lat, bm25_exact = row(
        "BM25, keyword_search_scan (every row scored, exact)",
        "select id from keyword_search_scan(%s, 10, %s::jsonb)",
        lambda q: (corpus.q_text[q], jflt),
        None,
        few,
    )
    bm25_lat, bm25_ids = row(
        "BM25, keyword_search (sparse_inverted index)",
        "select id from keyword_search(%s, 10, %s::jsonb)",
        lambda q: (corpus.q_text[q], jflt),
        None,
        fast,
    )
    _, keyword_ids = row(
        "full text (BM25, OR over lexemes, inverted index)",
        "select id from keyword_search(%s, 100, %s::jsonb)",
        lambda q: (corpus.q_text[q], jflt),
        None,
        fast,
    )

    def exact_hybrid(q):
        return rrf(
            [
                corpus.exact_dense(q, 100, mask),
                corpus.exact_sparse(q, 100, mask),
                keyword_ids[q],
            ]
        )

    hybrid_lat, hybrid_ids = row(
        "hybrid_search, three legs, RRF",
        "select id from hybrid_search(%s, %s::vector, %s::sparsevec, 10, fusion => 'rrf',"
        " filter => %s::jsonb)",
        lambda q: (
            corpus.q_text[q],
            corpus.q_dense[q],
            sparse_param(*corpus.q_sparse[q]),
            jflt,
        ),
        exact_hybrid,
        fast,
    )
    key = "filtered" if flt else "unfiltered"
    extra[f"{key}_am_p95"] = np.percentile(am_lat, 95)
    extra[f"{key}_bm25_vs_scan_p95"] = np.percentile(bm25_scan_lat, 95) / np.percentile(
        bm25_lat, 95
    )
    extra[f"{key}_bm25_recall"] = np.mean(
        [recall(bm25_ids[q], bm25_exact[q]) for q in range(len(bm25_exact))]
    )
    extra[f"{key}_am_vs_old_p95"] = np.percentile(old_lat, 95) / np.percentile(am_lat, 95)
    extra[f"{key}_am_vs_numpy_p95"] = np.percentile(am_lat, 95) / np.percentile(numpy_lat, 95)
    extra[f"{key}_sparse_vs_scan_p95"] = np.percentile(scan_lat, 95) / np.percentile(sparse_lat, 95)
    extra[f"{key}_sparse_vs_join_p95"] = np.percentile(join_lat, 95) / np.percentile(sparse_lat, 95)
    extra[f"{key}_hybrid_vs_dense_p95"] = np.percentile(hybrid_lat, 95) / np.percentile(
        dense_lat, 95
    )
    extra[f"{key}_hybrid_min_results"] = min(len(ids) for ids in hybrid_ids)
    return table, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--slow-queries", type=int, default=20, help="for the exact scans")
    parser.add_argument("--save", action="store_true", help="write bench/results/DATE-DOCS.md")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args()
    table, facts = run(args.docs, args.queries, args.slow_queries, args.keep)
    report = render(args, table, facts)
    print(report)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        name = f"{datetime.date.today()}-{args.docs}.md"
        (RESULTS / name).write_text(report)
        print(f"saved bench/results/{name}")


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = subprocess.run([pg_bin() / "postgres", "--version"], capture_output=True, text=True)
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {pg.stdout.strip()}"


def render(args, table, facts) -> str:
    out = [
        f"# Retrieval benchmark: {args.docs:,} documents",
        "",
        f"- date: {datetime.date.today()}; machine: {machine()}",
        f"- command: `.venv/bin/python bench/retrieval.py --docs {args.docs} --queries {args.queries}`",
        f"- {args.queries} queries ({args.slow_queries} for the exact scans and the postings join);"
        " query embedding excluded (vectors passed in); recall@10 against exact top-10",
        "",
        "| query | p50 ms | p95 ms | p99 ms | recall@10 |",
        "|---|---|---|---|---|",
        *[f"| {name} | {p50} | {p95} | {p99} | {rec} |" for name, p50, p95, p99, rec in table],
        "",
        "| ratio (same run) | value |",
        "|---|---|",
    ]
    for key in ("unfiltered", "filtered"):
        out += [
            f"| {key}: sparse_inverted p95 vs table-based inverted index p95 | {facts[f'{key}_am_vs_old_p95']:.1f}x faster |",
            f"| {key}: sparse_inverted p95 / numpy brute force p95 | {facts[f'{key}_am_vs_numpy_p95']:.2f} |",
            f"| {key}: sparse index p95 vs exact scan p95 | {facts[f'{key}_sparse_vs_scan_p95']:.1f}x faster |",
            f"| {key}: sparse index p95 vs postings join p95 | {facts[f'{key}_sparse_vs_join_p95']:.1f}x faster |",
            f"| {key}: hybrid p95 / dense p95 | {facts[f'{key}_hybrid_vs_dense_p95']:.2f} |",
            f"| {key}: BM25 sparse_inverted p95 vs keyword_search_scan p95 | {facts[f'{key}_bm25_vs_scan_p95']:.1f}x faster |",
            f"| {key}: BM25 sparse_inverted top 10 = keyword_search_scan's (recall@10, slow queries) | {facts[f'{key}_bm25_recall']:.3f} |",
            f"| {key}: fewest hybrid results for k = 10 | {facts[f'{key}_hybrid_min_results']} |",
        ]
    w, wo = facts["write_with_index_s"], facts["write_without_index_s"]
    aw, awo = facts["write_with_am_s"], facts["write_without_am_s"]
    out += [
        f"| COPY of 2,000 rows with vectors: with / without sparse-index triggers | {w:.2f} s / {wo:.2f} s = {w / wo:.2f}x |",
        f"| COPY of 2,000 rows with vectors: with / without documents_sparse_idx | {aw:.2f} s / {awo:.2f} s = {aw / awo:.2f}x |",
        f"| 20% churn: UPDATE of a fifth of the rows / VACUUM after it | {facts['churn_update_s']:.1f} s / {facts['churn_vacuum_s']:.1f} s |",
        "",
        "| build | seconds |",
        "|---|---|",
        f"| generate corpus (numpy) | {facts['generate_s']:.1f} |",
        f"| COPY documents (vectors supplied, fts by trigger, GIN) | {facts['copy_s']:.1f} |",
        f"| HNSW index (m 16, ef_construction 64) | {facts['hnsw_build_s']:.1f} |",
        f"| sparse_inverted index (CREATE INDEX documents_sparse_idx) | {facts['sparse_am_build_s']:.1f} |",
        f"| sparse_inverted BM25 index (CREATE INDEX documents_fts_bm25_idx) | {facts['bm25_am_build_s']:.1f} |",
        f"| table-based sparse inverted index + statistics (hybrid_search_refresh) | {facts['sparse_build_s']:.1f} |",
        f"| plain postings table + btree (baseline) | {facts['postings_join_build_s']:.1f} |",
        "",
        "| size | MB |",
        "|---|---|",
        *[f"| {k[6:]} | {v:.0f} |" for k, v in facts.items() if k.startswith("size: ")],
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
