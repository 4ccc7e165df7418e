"""Retrieval at scale: every leg against its peers, in one run on one corpus.

A deterministic synthetic corpus (corpus.py) is COPYed into a throwaway
cluster with its vectors supplied, so no model is in the loop and query
embedding is excluded. The same corpus and queries go to the peers, in this
process (peers.py): an exact numpy brute force for the sparse leg and for
BM25, Seismic (approximate learned sparse, tuned to recall@10 about 0.95 on
separate queries) and tantivy (BM25, OR over the same words). Measured:

- every leg's p50/p95/p99 and recall@10 against the exact top 10: dense
  (the default dense_flat graph, or --dense-index's, and the exact scan), sparse (the sparse_inverted index
  access method, sparse_search, pgvector's exact scan, a postings join), BM25
  (bm25_leg below: the same access method over fts) and hybrid_search;
- the same with a 10% metadata filter, and for a row-level-security role
  that sees 10% of the rows ("full lists": queries that got as many results
  as exist, i.e. k whenever k visible matches exist);
- queries per second with 1, 2 and 4 concurrent clients (one connection each);
- index build times and sizes, the peers' too;
- p95 after 20% of the rows are updated (10%) or deleted (10%), before and
  after VACUUM;
- COPY throughput (rows/s) with all indexes, with only the two sparse_inverted
  indexes (sparse, BM25), and without any, over enough rows for two merges of
  each sparse_inverted index's pending list (insert_throughput).

Every figure comes from one run, so ratios against rows of the same run
(the peers, dense-only, the unfiltered and clean rows) are what a loaded,
shared machine can still show.

    .venv/bin/hybrid-search bench --docs 100000 [--save]
    .venv/bin/python bench/retrieval.py --docs 100000 [--queries 200] [--save]

Seismic and tantivy come from requirements/bench.lock, which `hybrid-search
bench` and `make bench` install into .venv.

--scale is the run for a corpus of a million rows on this machine: the legs, the
10% filter and the row-level-security role against tantivy and the numpy brute
force, build times and sizes. It leaves out what would take hours or most of
the memory there: Seismic (a 1-thread build per setting, ~40 minutes each at
that size), the exact pgvector scans, the postings-join baseline, concurrency,
churn and COPY throughput; the row-level-security role's queries scored with
the visible rows' BM25 statistics (a pass over them per query) use the slow
query count.

With --scale or --fusion-only no row is loaded after the build, so the process
then drops its documents (resident memory 8 GB -> 1.4 GB at a million rows),
keeping each query's exact dense top 100: the page cache, not the benchmark,
holds the database while the legs are timed.

    .venv/bin/python bench/retrieval.py --docs 1000000 --scale --save --suffix 1m
"""

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
from common import add_huge_pages_argument, rollup, use_huge_pages
from corpus import DIM, VOCAB, Corpus
from hybrid_search_installer import database, extension_files
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout, pg_bin
from peers import Seismic, Tantivy, overlap, recall
from pgvector import SparseVector
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

RESULTS = Path(__file__).with_name("results")
K = 10
CANDIDATES = 100  # hybrid_search's candidates per leg (its default)
TENANT = 3  # tenant 3 is 10% of the rows: the filter and the row-level-security policy
POLICY_EXPRESSION = "((metadata->>'tenant')::int)"  # the row-level-security policy's
# the sparse_inverted indexes a DBA adds for that policy: name -> ranked column and its class
SPARSE_POLICY_INDEXES = {
    "bench_tenant_sparse_idx": "sparse sparsevec_ip_ops",
    "bench_tenant_bm25_idx": "fts tsvector_bm25_ops",
}
CLIENTS = (1, 2, 4)


# --------------------------------------------------------------------------- the legs


def sparse_param(tokens, weights):
    return SparseVector(dict(zip(tokens.tolist(), weights.tolist(), strict=True)), VOCAB)


def bm25_leg(corpus, k, jflt):
    """The BM25 leg's SQL, giving (id, BM25 score) best first, and a function of a
    query number giving its parameters. The one place to change when the leg's SQL
    changes (the C engine's operator)."""
    sql = "select id, score from keyword_search(%s, %s, %s::jsonb)"
    return sql, lambda q: (corpus.q_text[q], k, jflt)


def dense_leg(corpus, k, jflt):
    return "select id from dense_search(%s::vector, %s, %s::jsonb)", lambda q: (
        corpus.q_dense[q],
        k,
        jflt,
    )


SPARSE_AM_SQL = (
    "select id from documents where sparse is not null"
    " and (%s::jsonb is null or metadata @> %s::jsonb)"
    " order by sparse <#> %s::sparsevec limit %s"
)


def sparse_leg(corpus, k, jflt):
    """The sparse leg as a plain index scan of documents_sparse_idx."""
    return SPARSE_AM_SQL, lambda q: (jflt, jflt, sparse_param(*corpus.q_sparse[q]), k)


def sparse_function_leg(name):
    """The sparse leg through one of our functions (sparse_search, which sizes the
    scan's first batch for k as hybrid_search does, or sparse_search_scan)."""

    def leg(corpus, k, jflt):
        return f"select id from {name}(%s::sparsevec, %s, %s::jsonb)", lambda q: (
            sparse_param(*corpus.q_sparse[q]),
            k,
            jflt,
        )

    return leg


def hybrid_leg(corpus, k, jflt):
    sql = (
        "select id from hybrid_search(%s, %s::vector, %s::sparsevec, %s, fusion => 'rrf',"
        " filter => %s::jsonb)"
    )
    return sql, lambda q: (
        corpus.q_text[q],
        corpus.q_dense[q],
        sparse_param(*corpus.q_sparse[q]),
        k,
        jflt,
    )


def rrf(lists, k=K, rrf_k=60):
    scores = {}
    for ids in lists:
        for rank, doc in enumerate(ids, 1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (rrf_k + rank)
    return [d for d, _ in sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:k]]


def exact_hybrid(corpus, mask):
    def reference(q):
        return rrf(
            [
                corpus.exact_dense(q, 100, mask),
                corpus.exact_sparse(q, 100, mask),
                corpus.exact_bm25(q, 100, mask),
            ]
        )

    return reference


# --------------------------------------------------------------------------- timing


def timed(conn, sql, params_list):
    """(latencies in ms, row lists) of running sql once per parameter tuple, after an
    untimed run of each (plan caching, the backend's first PL/Python import, and the
    pages the queries read: the timings are of warm caches, as the in-process peers'
    are, not of what the build or the previous row evicted)."""
    for params in params_list:
        conn.execute(sql, params, prepare=True).fetchall()
    latencies, results = [], []
    for params in params_list:
        started = time.perf_counter()
        rows = conn.execute(sql, params, prepare=True).fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
        results.append(rows)
    return latencies, results


def timed_in_process(search, qs):
    latencies, results = [], []
    for q in qs:
        started = time.perf_counter()
        results.append(search(q))
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, results


def percentiles(latencies):
    return [f"{p:.2f}" for p in np.percentile(latencies, [50, 95, 99])]


class Table:
    """The measured rows: (measure, p50, p95, p99, recall@10, full lists), and each
    row's p95 under a key for the ratios."""

    def __init__(self):
        self.rows, self.p95 = [], {}
        self.bm25_tantivy_overlap = self.bm25_score_error = None

    def add(self, key, name, latencies, ids, qs, reference=None):
        """reference(q) is the exact top k: recall@10, and whether the leg returned
        as many rows as the exact answer has (k when k visible matches exist)."""
        if reference is None:
            rec, full = "-", "-"
        else:
            refs = [reference(q) for q in qs]
            rec = f"{np.mean([recall(f, r) for f, r in zip(ids, refs, strict=True)]):.3f}"
            full = sum(len(f) >= len(r) for f, r in zip(ids, refs, strict=True))
            full = f"{full}/{len(qs)}"
        self.rows.append((name, *percentiles(latencies), rec, full))
        self.p95[key] = float(np.percentile(latencies, 95))

    def sql(self, conn, key, name, leg, qs, reference=None):
        """Times the leg's SQL on queries qs and adds its row; returns its row lists
        (no row when qs is empty: --scale leaves the slow queries out)."""
        if not qs:
            return []
        sql, params = leg
        latencies, rows = timed(conn, sql, [params(q) for q in qs])
        self.add(key, name, latencies, [[r[0] for r in found] for found in rows], qs, reference)
        return rows

    def ratio(self, a, b):
        """p95 of row a over row b's, or None where the run measured one of them not."""
        if a not in self.p95 or b not in self.p95:
            return None
        return self.p95[a] / self.p95[b]


# --------------------------------------------------------------------------- loading


def load(conn, corpus, ids=None):
    ids = range(corpus.n) if ids is None else ids
    with conn.cursor().copy(
        "copy documents (id, content, metadata, dense, sparse) from stdin with (format binary)"
    ) as copy:
        copy.set_types(["int8", "text", "jsonb", "vector", "sparsevec"])
        for i in ids:
            j = i % corpus.n  # extra rows (insert_throughput) reuse the corpus' vectors
            copy.write_row(
                (
                    i + 1,
                    corpus.text(j),
                    Jsonb({"tenant": int(corpus.tenant[j])}),
                    corpus.dense[j],
                    sparse_param(*corpus.sparse[j]),
                )
            )


def check_lexemes(conn, corpus, sample=200):
    """The peers index each document's words; that they are the lexemes the BM25
    leg scores (one per word, a position per repetition) is checked, not assumed."""
    step = max(1, corpus.n // sample)
    rows = conn.execute(
        "select d.id, array_agg(u.lexeme order by u.lexeme),"
        " array_agg(cardinality(u.positions) order by u.lexeme)"
        " from documents as d cross join lateral unnest(d.fts) as u"
        " where d.id %% %s = 1 group by d.id",
        [step],
    ).fetchall()
    for doc, lexemes, counts in rows:
        words, repeats = np.unique(corpus.words[doc - 1], return_counts=True)
        expected = sorted(zip([f"w{w}" for w in words], repeats.tolist(), strict=True))
        if sorted(zip(lexemes, counts, strict=True)) != expected:
            raise RuntimeError(f"document {doc}: its fts lexemes are not its words")
    if not rows:
        raise RuntimeError("no document to compare lexemes with")


def create_postings_table(conn, corpus):
    """The naive baseline: one row per (token, document, weight), btree on token."""
    p = corpus.sparse_postings
    tokens = np.repeat(np.arange(p.starts.size - 1), np.diff(p.starts))
    conn.execute("create table bench_postings (token int4, doc int8, weight float4)")
    row = np.dtype(
        [("n", ">i2"), ("l1", ">i4"), ("t", ">i4"), ("l2", ">i4"), ("d", ">i8"),
         ("l3", ">i4"), ("w", ">f4")]
    )  # fmt: skip
    with conn.cursor().copy("copy bench_postings from stdin with (format binary)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\0" + b"\0" * 8)
        for start in range(0, p.docs.size, 1_000_000):
            end = min(start + 1_000_000, p.docs.size)
            data = np.empty(end - start, row)
            data["n"], data["l1"], data["l2"], data["l3"] = 3, 4, 8, 4
            data["t"] = tokens[start:end]
            data["d"] = p.docs[start:end]
            data["w"] = p.weights[start:end]
            copy.write(data.tobytes())
        copy.write(b"\xff\xff")
    conn.execute("create index on bench_postings (token) include (doc, weight)")
    conn.execute("vacuum analyze bench_postings")


def timed_step(facts, key, step, *args):
    started = time.perf_counter()
    result = step(*args)
    facts[key] = time.perf_counter() - started
    return result


# as the extension creates them (021, 025): metadata is their filter column
SPARSE_INDEX = (
    "create index documents_sparse_idx on documents"
    " using sparse_inverted (sparse sparsevec_ip_ops, metadata jsonb_filter_ops)"
)
BM25_INDEX = (
    "create index documents_fts_bm25_idx on documents"
    " using sparse_inverted (fts tsvector_bm25_ops, metadata jsonb_filter_ops)"
)


def prepare_documents(conn):
    """documents at the corpus's dimensions, without autovacuum and without its
    indexes on vectors, which are built after the load (SPARSE_INDEX, BM25_INDEX,
    hybrid_search_create_dense_index): a COPY into an HNSW graph is 13x slower."""
    conn.execute(
        f"alter table documents alter column dense type vector({DIM}),"
        f" alter column sparse type sparsevec({VOCAB})"
    )
    # no autovacuum: it would run during the timings, and after the 20% churn (its
    # default threshold) it would turn "before VACUUM" into "during VACUUM"
    conn.execute(
        "alter table documents set (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
    )
    conn.execute("drop index documents_sparse_idx")
    conn.execute("drop index documents_fts_bm25_idx")
    conn.execute("drop index if exists documents_dense_idx")


# hybrid_search_create_dense_index's parameters, by method (sql/036)
DENSE_BUILD = {
    "graph": "graph: dense_flat, degree 32, build width 128",
    "hnsw": "hnsw, m 16, ef_construction 64",
    "hnsw_halfvec": "hnsw_halfvec, m 16, ef_construction 64",
    "ivfflat": "ivfflat, lists 100",
    "none": "none",
}


def build(conn, corpus, facts, baseline=True, dense_method="graph"):
    """Load the corpus and build every index, timed."""
    prepare_documents(conn)
    timed_step(
        facts, "build: COPY documents (vectors supplied, fts by trigger, GIN)", load, conn, corpus
    )
    conn.execute("vacuum analyze documents")
    check_lexemes(conn, corpus)
    for name, sql in [
        ("sparse_inverted index (CREATE INDEX documents_sparse_idx)", SPARSE_INDEX),
        (
            f"dense index ({DENSE_BUILD[dense_method]})",
            f"select hybrid_search_create_dense_index('{dense_method}')",
        ),
        ("sparse_inverted BM25 index (CREATE INDEX documents_fts_bm25_idx)", BM25_INDEX),
        (
            "token statistics (hybrid_search_refresh)",
            "select hybrid_search_refresh()",
        ),
    ]:
        timed_step(facts, f"build: {name}", conn.execute, sql)
    if baseline:
        timed_step(
            facts,
            "build: plain postings table + btree (baseline)",
            create_postings_table,
            conn,
            corpus,
        )
    # the load's dirty buffers written now, not by a checkpoint during the first timings
    conn.execute("checkpoint")


# --------------------------------------------------------------------------- measures


def measure_pass(conn, table, corpus, peers, fast, few, filtered):
    """Every leg once, unfiltered or with the 10% metadata filter; the peers (which
    have no filter) unfiltered only, the numpy brute force both ways."""
    label = " (10% filter)" if filtered else ""
    tag = "filtered " if filtered else ""
    jflt = Jsonb({"tenant": TENANT}) if filtered else None
    mask = corpus.tenant == TENANT if filtered else None

    def dense_ref(q):
        return corpus.exact_dense(q, K, mask)

    def sparse_ref(q):
        return corpus.exact_sparse(q, K, mask)

    def bm25_ref(q):
        return corpus.exact_bm25(q, K, mask)

    table.sql(conn, tag + "dense", dense_leg_name(filtered) + label,
              dense_leg(corpus, K, jflt), fast, dense_ref)  # fmt: skip
    table.sql(
        conn,
        tag + "dense exact",
        "dense, exact scan" + label,
        (
            "select id from documents where dense is not null and (%s::jsonb is null"
            " or metadata @> %s::jsonb) order by (dense <=> %s::vector) + 0, id limit %s",
            lambda q: (jflt, jflt, corpus.q_dense[q], K),
        ),
        few,
        dense_ref,
    )
    table.sql(conn, tag + "sparse", "sparse, sparse_inverted index (ORDER BY <#> LIMIT 10)" + label,
              sparse_leg(corpus, K, jflt), fast, sparse_ref)  # fmt: skip
    table.sql(conn, tag + "sparse_search", "sparse, sparse_search (sparse_inverted index)" + label,
              sparse_function_leg("sparse_search")(corpus, K, jflt), fast, sparse_ref)  # fmt: skip
    latencies, ids = timed_in_process(sparse_ref, fast)
    table.add(tag + "sparse numpy", "sparse, exact numpy brute force (in process)" + label,
              latencies, ids, fast, sparse_ref)  # fmt: skip
    if not filtered and "seismic" in peers:
        latencies, ids = timed_in_process(
            lambda q: peers["seismic"].search(*corpus.q_sparse[q]), fast
        )
        table.add("seismic", "sparse, Seismic (in process; n_postings"
                  f" {peers['seismic'].n_postings}, heap_factor {peers['seismic'].heap_factor})",
                  latencies, ids, fast, sparse_ref)  # fmt: skip
    table.sql(conn, tag + "sparse exact scan", "sparse, pgvector exact scan (<#>)" + label,
              sparse_function_leg("sparse_search_scan")(corpus, K, jflt), few,
              sparse_ref)  # fmt: skip
    table.sql(
        conn,
        tag + "sparse postings join",
        "sparse, postings join" + label,
        (
            "select p.doc from bench_postings as p"
            " join unnest(%s::int4[], %s::float4[]) as q (token, weight) on p.token = q.token"
            " where %s::jsonb is null or exists (select from documents as d"
            "  where d.id = p.doc and d.metadata @> %s::jsonb)"
            " group by p.doc order by sum(p.weight * q.weight) desc, p.doc limit %s",
            lambda q: (*[a.tolist() for a in corpus.q_sparse[q]], jflt, jflt, K),
        ),
        few,
        sparse_ref,
    )
    bm25_rows = table.sql(conn, tag + "bm25", "BM25 leg (OR over lexemes)" + label,
                          bm25_leg(corpus, K, jflt), fast, bm25_ref)  # fmt: skip
    bm25_ids = [[r[0] for r in rows] for rows in bm25_rows]
    latencies, ids = timed_in_process(bm25_ref, fast)
    table.add(tag + "bm25 numpy", "BM25, exact numpy brute force (in process)" + label,
              latencies, ids, fast, bm25_ref)  # fmt: skip
    if not filtered:
        latencies, ids = timed_in_process(
            lambda q: peers["tantivy"].search(corpus.q_words[q]), fast
        )
        table.add("tantivy", "BM25, tantivy (in process)", latencies, ids, fast, bm25_ref)
        table.bm25_tantivy_overlap = np.mean(
            [overlap(a, b) for a, b in zip(bm25_ids, ids, strict=True)]
        )
        table.bm25_score_error = bm25_score_error(corpus, bm25_rows, fast)
    table.sql(conn, tag + "hybrid", "hybrid_search, three legs, RRF" + label,
              hybrid_leg(corpus, K, jflt), fast, exact_hybrid(corpus, mask))  # fmt: skip
    measure_candidate_legs(conn, table, corpus, fast, filtered)


def pass_names(filtered, own_indexes=False):
    """A pass's label in the table's rows (without parentheses) and its rows' key prefix:
    unfiltered, the 10% filter, or that filter served by its own indexes."""
    if own_indexes:
        return "10% filter, its own indexes", "own filtered "
    return ("10% filter", "filtered ") if filtered else ("", "")


def dense_leg_name(filtered, own_indexes=False):
    """What serves dense_search: the run's dense index, or under the 10% filter (without
    its own indexes) dense_flat, unless that index is HNSW on halfvec."""
    if filtered and not own_indexes:
        walked = DENSE_NAME[0] == DENSE_NAMES["hnsw_halfvec"]
        return f"dense, dense_search ({DENSE_NAME[0] if walked else 'dense_flat'})"
    return f"dense, {DENSE_NAME[0]} (ef_search 100)"


def measure_candidate_legs(conn, table, corpus, fast, filtered, own_indexes=False):
    """Each leg alone asked for CANDIDATES rows, hybrid_search's default per leg:
    about what the fused call spends in that leg (recall against the exact top 10)."""
    described, tag = pass_names(filtered, own_indexes)
    label = f" ({CANDIDATES} candidates{', ' + described if described else ''})"
    jflt = Jsonb({"tenant": TENANT}) if filtered else None
    mask = corpus.tenant == TENANT if filtered else None
    for key, name, leg, reference in [
        ("dense", dense_leg_name(filtered, own_indexes), dense_leg, corpus.exact_dense),
        (
            "sparse",
            "sparse, sparse_search",
            sparse_function_leg("sparse_search"),
            corpus.exact_sparse,
        ),
        ("bm25", "BM25 leg", bm25_leg, corpus.exact_bm25),
    ]:
        table.sql(conn, f"{tag}{key} candidates", name + label, leg(corpus, CANDIDATES, jflt),
                  fast, lambda q, reference=reference: reference(q, K, mask))  # fmt: skip


def bm25_score_error(corpus, rows_per_query, qs):
    """The largest relative difference between a score the BM25 leg returned and
    the numpy BM25's for the same document (statistics of the whole corpus)."""
    errors = [0.0]
    for rows, q in zip(rows_per_query, qs, strict=True):
        exact = corpus.bm25.scores(corpus.q_words[q])
        errors += [abs(score - exact[doc]) / exact[doc] for doc, score in rows]
    return max(errors)


def measure_fusion_pass(conn, table, corpus, fast, filtered, own_indexes=False):
    """--fusion-only: the three legs and hybrid_search, unfiltered or with the 10%
    metadata filter (hybrid_search's p95 against the legs' in the same run)."""
    described, tag = pass_names(filtered, own_indexes)
    label = f" ({described})" if described else ""
    jflt = Jsonb({"tenant": TENANT}) if filtered else None
    mask = corpus.tenant == TENANT if filtered else None
    for key, name, leg, reference in [
        ("dense", dense_leg_name(filtered, own_indexes), dense_leg, corpus.exact_dense),
        ("sparse", "sparse, sparse_inverted index (ORDER BY <#> LIMIT 10)", sparse_leg,
         corpus.exact_sparse),
        ("bm25", "BM25 leg (OR over lexemes)", bm25_leg, corpus.exact_bm25),
    ]:  # fmt: skip
        table.sql(conn, tag + key, name + label, leg(corpus, K, jflt), fast,
                  lambda q, reference=reference: reference(q, K, mask))  # fmt: skip
    table.sql(conn, tag + "hybrid", "hybrid_search, three legs, RRF" + label,
              hybrid_leg(corpus, K, jflt), fast, exact_hybrid(corpus, mask))  # fmt: skip
    if filtered and not own_indexes:  # a filter no row fails: no set of its rows to make
        table.sql(conn, "every row filter dense",
                  "dense, dense_search (filter '{}', which every row meets)",
                  dense_leg(corpus, K, Jsonb({})), fast,
                  lambda q: corpus.exact_dense(q, K, None))  # fmt: skip
        table.sql(conn, "every row filter hybrid",
                  "hybrid_search, three legs, RRF (filter '{}', which every row meets)",
                  hybrid_leg(corpus, K, Jsonb({})), fast, exact_hybrid(corpus, None))  # fmt: skip
    measure_candidate_legs(conn, table, corpus, fast, filtered, own_indexes)


def measure_kept_free_memory(dsn, table, corpus, fast):
    """The dense leg at CANDIDATES rows, then hybrid_search, each with the default
    hybrid_search.kept_free_memory and with 0 (glibc's starting malloc thresholds: the
    rows the executor reorders are faulted in again by every query), in a new
    connection: in the run's own, the sparse legs' kept arrays (sparse_kept_memory) sit
    at the top of the heap, and glibc trims nothing below them either way."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        for key, name, leg, reference in [
            ("dense candidates", f"{dense_leg_name(False)} ({CANDIDATES} candidates",
             dense_leg(corpus, CANDIDATES, None), lambda q: corpus.exact_dense(q, K, None)),
            ("hybrid", "hybrid_search, three legs, RRF (", hybrid_leg(corpus, K, None),
             exact_hybrid(corpus, None)),
        ]:  # fmt: skip
            for setting in ("16MB", "0"):
                conn.execute(f"set hybrid_search.kept_free_memory = '{setting}'")
                label = f"{name}, kept_free_memory {setting}, a new connection)".replace("(, ", "(")
                table.sql(conn, f"kept {setting} {key}", label, leg, fast, reference)


def kept_memory_ratios(table: Table) -> list[tuple[str, float | None]]:
    """kept_free_memory's default over 0, in one new connection."""
    return [
        (f"dense at {CANDIDATES} candidates, kept_free_memory 16MB p95 / 0 p95",
         table.ratio("kept 16MB dense candidates", "kept 0 dense candidates")),
        ("hybrid_search, kept_free_memory 16MB p95 / 0 p95",
         table.ratio("kept 16MB hybrid", "kept 0 hybrid")),
    ]  # fmt: skip


# what serves the unfiltered dense leg, by hybrid_search_create_dense_index's method
DENSE_NAMES = {"hnsw": "pgvector HNSW", "hnsw_halfvec": "pgvector HNSW (halfvec)",
               "graph": "dense_flat graph"}  # fmt: skip
DENSE_NAME = [DENSE_NAMES["graph"]]  # the run's, set by run()


def measure_hnsw_walk(conn, table, corpus, fast):
    """The 10% filter's dense leg and hybrid_search with documents_dense_filter_idx out
    of the way (dropped in a transaction rolled back afterwards): pgvector's HNSW walking
    past the rows the filter rejects, which dense_flat replaces, in the same run (with a
    halfvec HNSW index a filtered leg walks it either way; a graph has no such index)."""
    jflt = Jsonb({"tenant": TENANT})
    mask = corpus.tenant == TENANT
    label = " (10% filter, HNSW walk: dense_flat dropped)"
    if conn.execute("select to_regclass('documents_dense_filter_idx') is null").fetchone()[0]:
        return  # the graph method: documents_dense_idx is dense_flat, filtered or not
    with conn.transaction(force_rollback=True):
        conn.execute("drop index documents_dense_filter_idx")
        table.sql(conn, "filtered walk dense", "dense, pgvector HNSW (ef_search 100)" + label,
                  dense_leg(corpus, K, jflt), fast, lambda q: corpus.exact_dense(q, K, mask))  # fmt: skip
        table.sql(conn, "filtered walk dense candidates",
                  f"dense, pgvector HNSW (ef_search 100) ({CANDIDATES} candidates, {label[2:]}",
                  dense_leg(corpus, CANDIDATES, jflt), fast,
                  lambda q: corpus.exact_dense(q, K, mask))  # fmt: skip
        table.sql(conn, "filtered walk hybrid", "hybrid_search, three legs, RRF" + label,
                  hybrid_leg(corpus, K, jflt), fast, exact_hybrid(corpus, mask))  # fmt: skip


FILTER_INDEXES = "bench_tenant"  # hybrid_search_create_filter_indexes' name for the TENANT's
FILTER_POLICY = f"metadata @> '{{\"tenant\": {TENANT}}}'::jsonb"  # the filter, as a policy


def measure_filter_indexes(conn, table, corpus, fast, facts):
    """The 10% filter's legs and hybrid_search again, with the filter's own indexes
    (hybrid_search_create_filter_indexes: copies of the three search indexes holding
    its rows only); their build time and sizes; dropped afterwards."""
    started = time.perf_counter()
    names = [
        r[0]
        for r in conn.execute(
            "select * from hybrid_search_create_filter_indexes(%s, %s)",
            [FILTER_INDEXES, Jsonb({"tenant": TENANT})],
        )
    ]
    facts["filter indexes"] = (
        time.perf_counter() - started,
        {name: relation_mb(conn, name, "pg_relation_size") for name in names},
    )
    try:
        measure_fusion_pass(conn, table, corpus, fast, True, own_indexes=True)
        # a role whose policy is the filter: its legs scan the copies, and its BM25
        # statistics are the BM25 copy's (_bm25_policy_index), not a pass over its rows
        with row_security_reader(conn, FILTER_POLICY):
            measure_reader_legs(conn, table, corpus, fast, fast, "rls own ",
                                " (RLS role seeing 10%, policy = the filter with its own indexes)")  # fmt: skip
    finally:
        conn.execute("select hybrid_search_drop_filter_indexes(%s)", [FILTER_INDEXES])


def filter_index_line(facts) -> list[str]:
    """The report's line on the filter's own indexes: build time and sizes."""
    seconds, sizes = facts["filter indexes"]
    listed = ", ".join(f"{name} {mb:.0f} MB" for name, mb in sizes.items())
    return [f"- the 10% filter's own indexes (hybrid_search_create_filter_indexes): built in"
            f" {seconds:.1f} s; {listed}"]  # fmt: skip


def filter_index_ratios(table: Table) -> list[tuple[str, float | None]]:
    """Each leg and hybrid_search with the 10% filter served by its own indexes, and
    for a role whose policy is that filter, over its unfiltered p95."""
    legs = [("dense", "dense"), ("sparse", "sparse_inverted"), ("bm25", "BM25 leg"),
            ("hybrid", "hybrid_search")]  # fmt: skip
    return [
        (f"{name}, {case}, p95 / unfiltered p95 (goal ≤ 1.5)", table.ratio(prefix + key, key))
        for prefix, case in [("own filtered ", "10% filter with its own indexes"),
                             ("rls own ", "RLS role whose policy is that filter")]
        for key, name in legs
    ]  # fmt: skip


@contextlib.contextmanager
def row_security_reader(conn, policy=f"{POLICY_EXPRESSION} = {TENANT}"):
    """Runs the block as bench_reader, a role granted 'search' whose row-level-security
    policy shows it the TENANT's 10% of the rows; all taken back afterwards."""
    conn.execute("alter table documents enable row level security")
    conn.execute(f"create policy bench_tenant on documents using ({policy})")
    conn.execute("create role bench_reader")
    conn.execute("grant select on documents to bench_reader")
    conn.execute("select hybrid_search_grant('bench_reader')")
    try:
        conn.execute("set role bench_reader")
        yield
    finally:
        conn.execute("reset role")
        conn.execute("drop policy bench_tenant on documents")
        conn.execute("alter table documents disable row level security")
        conn.execute("select hybrid_search_revoke('bench_reader')")
        conn.execute("drop owned by bench_reader")
        conn.execute("drop role bench_reader")


def measure_reader_legs(conn, table, corpus, fast, visible, prefix, label):
    """Every leg and hybrid_search as the role row_security_reader made (the TENANT's
    rows), the BM25 leg and hybrid_search on the queries `visible`."""
    mask = corpus.tenant == TENANT
    for key, name, leg, reference, qs in [
        ("dense", f"dense, {DENSE_NAME[0]}", dense_leg, corpus.exact_dense, fast),
        ("sparse", "sparse, sparse_inverted index (ORDER BY <#> LIMIT 10)", sparse_leg,
         corpus.exact_sparse, fast),
        ("bm25", "BM25 leg", bm25_leg, corpus.exact_bm25, visible),
    ]:  # fmt: skip
        table.sql(conn, prefix + key, name + label, leg(corpus, K, None), qs,
                  lambda q, reference=reference: reference(q, K, mask))  # fmt: skip
    table.sql(conn, prefix + "hybrid", "hybrid_search" + label, hybrid_leg(corpus, K, None),
              visible, exact_hybrid(corpus, mask))  # fmt: skip


def measure_row_security(conn, table, corpus, fast, visible_statistics_queries=None):
    """Every leg for a role whose row-level-security policy shows it 10% of the rows;
    the BM25 leg and hybrid_search with the visible rows' statistics (a pass over them
    per query) on visible_statistics_queries (default: fast)."""
    visible = fast if visible_statistics_queries is None else visible_statistics_queries
    mask = corpus.tenant == TENANT
    label = " (RLS role seeing 10%)"
    with row_security_reader(conn):
        measure_reader_legs(conn, table, corpus, fast, visible, "rls ", label)
        # what a DBA adds for such a policy: its expression in a btree, which names the
        # role's rows, so that their BM25 statistics are counted in the BM25 index
        # (_bm25query_policy_rows) instead of a pass over them: every query, as the owner's
        conn.execute("reset role")
        conn.execute(f"create index bench_tenant_idx on documents ({POLICY_EXPRESSION})")
        conn.execute("analyze documents")
        try:
            conn.execute("set role bench_reader")
            indexed = ", policy's expression indexed"
            table.sql(conn, "rls indexed bm25", "BM25 leg" + label + indexed,
                      bm25_leg(corpus, K, None), fast, lambda q: corpus.exact_bm25(q, K, mask))  # fmt: skip
            table.sql(conn, "rls indexed hybrid", "hybrid_search" + label + indexed,
                      hybrid_leg(corpus, K, None), fast, exact_hybrid(corpus, mask))  # fmt: skip
            # and a dense_flat index with that expression as its filter column: the
            # policy's condition is then the dense scan's, which scores the role's rows only
            conn.execute("reset role")
            conn.execute("create index bench_tenant_dense_idx on documents using dense_flat"
                         f" (dense, ({POLICY_EXPRESSION}) int4_filter_ops)")  # fmt: skip
            conn.execute("set role bench_reader")
            flat = indexed + ", dense_flat on it"
            table.sql(conn, "rls flat dense", "dense, dense_search" + label + flat,
                      dense_leg(corpus, CANDIDATES, None), fast,
                      lambda q: corpus.exact_dense(q, K, mask))  # fmt: skip
            table.sql(conn, "rls flat hybrid", "hybrid_search" + label + flat,
                      hybrid_leg(corpus, K, None), fast, exact_hybrid(corpus, mask))  # fmt: skip
            # and the sparse and BM25 legs' own: sparse_inverted indexes with that expression
            # as their filter column (design.md), so that no leg fetches another tenant's row
            conn.execute("reset role")
            for name, column in SPARSE_POLICY_INDEXES.items():
                conn.execute(f"create index {name} on documents using sparse_inverted"
                             f" ({column}, ({POLICY_EXPRESSION}) int4_filter_ops)")  # fmt: skip
            conn.execute("analyze documents")
            conn.execute("set role bench_reader")
            every = flat + ", sparse_inverted on it"
            table.sql(conn, "rls every sparse", "sparse, sparse_inverted index" + label + every,
                      sparse_leg(corpus, K, None), fast, lambda q: corpus.exact_sparse(q, K, mask))  # fmt: skip
            table.sql(conn, "rls every hybrid", "hybrid_search" + label + every,
                      hybrid_leg(corpus, K, None), fast, exact_hybrid(corpus, mask))  # fmt: skip
        finally:
            conn.execute("reset role")
            for name in SPARSE_POLICY_INDEXES:
                conn.execute(f"drop index if exists {name}")
            conn.execute("drop index if exists bench_tenant_dense_idx")
            conn.execute("drop index bench_tenant_idx")
        # the owner's opt-in: the index's statistics for the role (the reference's too)
        conn.execute("reset role")
        conn.execute("select hybrid_search_configure(bm25_statistics => 'index')")
        try:
            conn.execute("set role bench_reader")
            table.sql(conn, "rls shared bm25", "BM25 leg" + label + ", bm25_statistics 'index'",
                      bm25_leg(corpus, K, None), fast, lambda q: corpus.exact_bm25(q, K, mask))  # fmt: skip
        finally:
            conn.execute("reset role")
            conn.execute("update hybrid_search_config set bm25_statistics = null")


def queries_per_second(dsn, leg, qs, clients):
    """Queries per second of `clients` threads, each with its own connection (the
    server does the work, so threads do not serialize on the GIL), each running
    every query once in its own order, started together after a warm-up."""
    sql, params = leg
    start = threading.Barrier(clients + 1)
    errors = []

    def client(c):
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                register_vector(conn)
                order = [params(qs[(i + c * 37) % len(qs)]) for i in range(len(qs))]
                for p in order[:3]:
                    conn.execute(sql, p, prepare=True).fetchall()
                start.wait()
                for p in order:
                    conn.execute(sql, p, prepare=True).fetchall()
        except BaseException as error:
            errors.append(error)
            start.abort()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: raised below
        start.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return clients * len(qs) / (time.perf_counter() - started)


def measure_concurrency(dsn, corpus, qs):
    """{leg: [qps at each of CLIENTS]}."""
    return {
        name: [queries_per_second(dsn, leg(corpus, K, None), qs, c) for c in CLIENTS]
        for name, leg in [
            (f"dense ({DENSE_NAME[0]})", dense_leg),
            ("sparse (sparse_inverted)", sparse_leg),
            ("BM25 leg", bm25_leg),
            ("hybrid_search", hybrid_leg),
        ]
    }


def measure_churn(conn, table, corpus, fast, facts):
    """Every leg after 20% of the rows changed: 10% updated (a new row version in
    every index, the old one dead) and 10% deleted, before and after VACUUM."""
    ids = np.arange(1, corpus.n + 1)
    alive = ids % 10 != 0
    timed_step(facts, "churn: UPDATE 10% of the rows", conn.execute,
               "update documents set metadata = metadata || '{\"churned\": true}' where id % 10 = 5")  # fmt: skip
    timed_step(facts, "churn: DELETE 10% of the rows", conn.execute,
               "delete from documents where id % 10 = 0")  # fmt: skip
    for stage in ("before VACUUM", "after VACUUM"):
        if stage == "after VACUUM":
            timed_step(facts, "churn: VACUUM", conn.execute, "vacuum documents")
        conn.execute("checkpoint")  # the writes' dirty buffers, before the timings
        label = f" (after 20% churn, {stage})"
        for key, name, leg, reference in [
            ("dense", f"dense, {DENSE_NAME[0]}", dense_leg, corpus.exact_dense),
            ("sparse", "sparse, sparse_inverted index (ORDER BY <#> LIMIT 10)", sparse_leg,
             corpus.exact_sparse),
            ("bm25", "BM25 leg", bm25_leg, corpus.exact_bm25),
        ]:  # fmt: skip
            table.sql(conn, f"churn {stage} {key}", name + label, leg(corpus, K, None), fast,
                      lambda q, reference=reference: reference(q, K, alive))  # fmt: skip
        table.sql(conn, f"churn {stage} hybrid", "hybrid_search" + label,
                  hybrid_leg(corpus, K, None), fast, exact_hybrid(corpus, alive))  # fmt: skip


OUR_INDEXES = ("documents_sparse_idx", "documents_fts_bm25_idx")


def rows_for_merges(conn, merges):
    """Rows to COPY, from empty pending lists (after a VACUUM), for `merges` merges of
    each sparse_inverted index of documents: one merges its pending list into its
    segment (the whole index rewritten) every max(hybrid_search.sparse_pending_limit,
    rows / 16) inserts, in the inserting backend, and each merge raises the next bound
    by a sixteenth. So a rate over them is what a long load sees, not the rate between
    two merges."""
    conn.execute("load 'hybrid_search'")  # defines its settings in this backend
    limit = int(
        conn.execute("select current_setting('hybrid_search.sparse_pending_limit')").fetchone()[0]
    )
    rows = conn.execute("select count(*) from documents").fetchone()[0]
    return merges * max(limit, rows // 16) * 17 // 16


def insert_throughput(conn, corpus, batch=2000, merges=2, restore=False):
    """rows/s with all indexes, with all but the dense index documents_dense_idx (the
    most a dense index that deferred its inserts could give), with only the two sparse_inverted ones, and
    without any: each mode's rows over the time of all its COPYs (of `batch` rows).
    Each mode starts after a VACUUM (which merges what is pending) and copies
    rows_for_merges, so every mode holds as many merges. What each index costs apart:
    bench/insert_costs.py.
    Indexes of the primary key and unique constraints always stay. The last measure of the
    run, as it drops the indexes; with restore (a kept cluster, which builds.py
    measures again) the copied rows go and the indexes are built again."""
    rates = {"all": 0.0, "no dense": 0.0, "ours": 0.0, "none": 0.0}
    first = base = corpus.n * 10
    dropped = []
    for mode in rates:
        for index, definition in conn.execute(
            "select indexrelid::regclass::text, pg_get_indexdef(indexrelid) from pg_index"
            " where indrelid = 'documents'::regclass"
            " and not exists (select from pg_constraint where conindid = indexrelid)"
        ).fetchall():
            if (
                mode == "none"
                or (mode == "ours" and index not in OUR_INDEXES)
                or (mode == "no dense" and index == "documents_dense_idx")
            ):
                conn.execute(f"drop index {index}")
                dropped.append(definition)
        # from empty pending lists: the merges then fall at the same places in every mode
        conn.execute("vacuum documents")
        span = rows_for_merges(conn, merges)
        started = time.perf_counter()
        for start in range(base, base + span, batch):
            load(conn, corpus, range(start, min(start + batch, base + span)))
        rates[mode] = span / (time.perf_counter() - started)
        base += span
    if restore:
        conn.execute("delete from documents where id > %s", [first])
        conn.execute("vacuum analyze documents")
        for definition in dropped:
            conn.execute(definition)
        conn.execute("analyze documents")
    return rates


def relation_mb(conn, name, size_function):
    """Its size by size_function, or None where the run did not build it."""
    size = conn.execute(f"select {size_function}(to_regclass(%s))", [name]).fetchone()[0]
    return None if size is None else size / 2**20


SIZES = [
    ("documents (heap + TOAST)", "documents", "pg_table_size"),
    ("dense index (documents_dense_idx)", "documents_dense_idx", "pg_relation_size"),
    ("full-text GIN index", "documents_fts_idx", "pg_relation_size"),
    ("sparse_inverted index (documents_sparse_idx)", "documents_sparse_idx", "pg_relation_size"),
    ("sparse_inverted BM25 index (documents_fts_bm25_idx)", "documents_fts_bm25_idx",
     "pg_relation_size"),
    ("plain postings table + btree (baseline)", "bench_postings", "pg_total_relation_size"),
]  # fmt: skip


# --------------------------------------------------------------------------- the run


def build_peers(corpus, facts, seismic=True):
    tantivy = Tantivy(corpus.words)
    facts["build: tantivy (in process, 1 thread)"] = tantivy.build_s
    facts["size: tantivy (index directory)"] = tantivy.size_mb
    if not seismic:
        return {"tantivy": tantivy}
    seismic = Seismic(corpus.sparse, VOCAB)
    started = time.perf_counter()
    facts["Seismic tuning recall@10"] = seismic.tune(
        corpus.q_sparse_tuning,
        lambda q: corpus.sparse_postings.top(*q, K),
    )
    facts["build: Seismic builds and tuning (in process)"] = time.perf_counter() - started
    facts[f"build: Seismic, n_postings {seismic.n_postings} (in process, 1 thread)"] = (
        seismic.build_s
    )
    facts["size: Seismic (saved index file)"] = seismic.size_mb
    return {"seismic": seismic, "tantivy": tantivy}


def run(
    docs,
    queries,
    slow_queries,
    keep=False,
    fusion_only=False,
    scale=False,
    port=5432,
    huge_pages=False,
    dense_method=None,
):
    dense_method = dense_method or "graph"
    DENSE_NAME[0] = DENSE_NAMES[dense_method]
    layout = Layout.from_environment()
    extension_files.ensure_extension_files(layout)  # never a stale library
    scratch = Path(tempfile.mkdtemp(prefix="hybrid_search_bench_"))
    scratch.chmod(0o755)
    cluster = Cluster(scratch / "cluster", port=port)
    table, facts = Table(), {"load average at start": os.getloadavg()}
    fast, few = range(queries), range(min(slow_queries, queries))
    peers = None
    try:
        cluster.init()
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = 4GB\nmaintenance_work_mem = 4GB\nmax_wal_size = 8GB\n")
            conf.write("checkpoint_timeout = 30min\nmax_parallel_maintenance_workers = 2\n")
        if huge_pages:  # checked before the minutes the corpus takes
            use_huge_pages(cluster)
        corpus = timed_step(facts, "build: generate corpus (numpy)", Corpus, docs, queries)
        timed_step(facts, "build: exact numpy references", corpus.build_references)
        peers = None if fusion_only else build_peers(corpus, facts, seismic=not scale)
        cluster.start()
        database.recreate_database(cluster.dsn("postgres"), "bench")
        dsn = cluster.dsn("bench")
        database.ensure_extension(dsn, layout, None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            register_vector(conn)
            build(conn, corpus, facts, baseline=not (fusion_only or scale),
                  dense_method=dense_method)  # fmt: skip
            if fusion_only or scale:  # no later COPY (insert_throughput) reads the rows
                timed_step(facts, "build: exact dense references kept, documents released",
                           corpus.release_documents, [None, corpus.tenant == TENANT],
                           CANDIDATES)  # fmt: skip
                # what the page cache cannot use while the legs are timed
                facts["resident GB"] = rollup(os.getpid())["Rss"] / 1024
            for filtered in (False, True):
                if fusion_only:
                    measure_fusion_pass(conn, table, corpus, fast, filtered)
                else:
                    measure_pass(conn, table, corpus, peers, fast, range(0) if scale else few,
                                 filtered)  # fmt: skip
            measure_kept_free_memory(dsn, table, corpus, fast)
            measure_hnsw_walk(conn, table, corpus, fast)
            measure_filter_indexes(conn, table, corpus, fast, facts)
            measure_row_security(conn, table, corpus, fast, few if scale else fast)
            if fusion_only:
                return table, facts
            for name, relation, size_function in SIZES:
                if (size := relation_mb(conn, relation, size_function)) is not None:
                    facts[f"size: {name}"] = size
            if scale:
                return table, facts
            facts["qps"] = measure_concurrency(dsn, corpus, fast)
            measure_churn(conn, table, corpus, fast, facts)
            facts["insert rows/s"] = insert_throughput(conn, corpus, restore=keep)
    finally:
        if peers:
            peers["tantivy"].close()
        if keep:
            print(f'kept: psql "{cluster.dsn("bench")}"')
        else:
            cluster.destroy()
            shutil.rmtree(scratch, ignore_errors=True)
        facts["load average at end"] = os.getloadavg()
    return table, facts


# --------------------------------------------------------------------------- the report


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = subprocess.run([pg_bin() / "postgres", "--version"], capture_output=True, text=True)
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {pg.stdout.strip()}"


def ratio_rows(table: Table, facts) -> list[str]:
    r = table.ratio
    rows = [
        ("sparse_inverted p95 / Seismic p95 (goal ≤ 1)", r("sparse", "seismic")),
        ("sparse_inverted p95 / numpy brute force p95", r("sparse", "sparse numpy")),
        ("sparse_inverted p95 / pgvector exact scan p95", r("sparse", "sparse exact scan")),
        ("BM25 leg p95 / tantivy p95 (goal ≤ 1.5)", r("bm25", "tantivy")),
        ("BM25 leg p95 / numpy brute force p95", r("bm25", "bm25 numpy")),
        ("hybrid_search p95 / dense-only p95 (goal ≤ 2)", r("hybrid", "dense")),
        ("BM25 leg, RLS role with bm25_statistics 'index' p95 / unfiltered p95 (goal ≤ 1.5)",
         r("rls shared bm25", "bm25")),
    ]  # fmt: skip
    for key, name in [("dense", "dense"), ("sparse", "sparse_inverted"), ("bm25", "BM25 leg"),
                      ("hybrid", "hybrid_search")]:  # fmt: skip
        rows += [
            (f"{name}, 10% filter p95 / unfiltered p95 (goal ≤ 1.5)", r(f"filtered {key}", key)),
            (f"{name}, RLS role p95 / unfiltered p95 (goal ≤ 1.5)", r(f"rls {key}", key)),
            (f"{name}, after churn p95 / clean p95, before VACUUM", r(f"churn before VACUUM {key}", key)),
            (f"{name}, after churn p95 / clean p95, after VACUUM (goal ≤ 1.1)",
             r(f"churn after VACUUM {key}", key)),
        ]  # fmt: skip
    rows += candidate_ratios(table) + filter_index_ratios(table) + indexed_policy_ratios(table)
    rows += kept_memory_ratios(table)
    out = [f"| {name} | {value:.2f} |" for name, value in rows if value is not None]
    out += [
        f"| BM25 leg and tantivy: mean top-10 overlap | {table.bm25_tantivy_overlap:.3f} |",
        f"| BM25 leg's scores against the numpy BM25's: largest relative difference | {table.bm25_score_error:.1e} |",
    ]
    if "Seismic tuning recall@10" in facts:
        out.append(
            f"| Seismic recall@10 on its 100 tuning queries | {facts['Seismic tuning recall@10']:.3f} |"
        )
    if rate := facts.get("insert rows/s"):
        out += [
            f"| COPY rows/s with all indexes / without any (goal ≥ 0.7) | {rate['all']:.0f} / {rate['none']:.0f} = {rate['all'] / rate['none']:.2f} |",
            f"| COPY rows/s with all indexes but the dense index / without any | {rate['no dense']:.0f} / {rate['none']:.0f} = {rate['no dense'] / rate['none']:.2f} |",
            f"| COPY rows/s with the two sparse_inverted indexes only / without any | {rate['ours']:.0f} / {rate['none']:.0f} = {rate['ours'] / rate['none']:.2f} |",
        ]
    return out


def candidate_ratios(table: Table) -> list[tuple[str, float | None]]:
    """What the 10% filter costs each leg at hybrid_search's CANDIDATES rows, set
    against hybrid_search's own unfiltered p95 (its goal allows 1.5 times that)."""
    return [
        (f"{name} at {CANDIDATES} candidates, 10% filter, p95 / hybrid_search unfiltered p95",
         table.ratio(f"filtered {key} candidates", "hybrid"))
        for key, name in [("dense", "dense"), ("sparse", "sparse_search"), ("bm25", "BM25 leg")]
    ]  # fmt: skip


def indexed_policy_ratios(table: Table) -> list[tuple[str, float | None]]:
    """The RLS role's BM25 leg and hybrid_search with the policy's expression in a btree
    (its rows' statistics counted in the BM25 index), over their unfiltered p95."""
    return [
        (f"{name}, RLS role, policy's expression indexed, p95 / unfiltered p95 (goal ≤ 1.5)",
         table.ratio(f"rls indexed {key}", key))
        for key, name in [("bm25", "BM25 leg"), ("hybrid", "hybrid_search")]
    ] + [
        ("hybrid_search, RLS role, dense_flat on the policy's expression, p95 / unfiltered p95"
         " (goal ≤ 1.5)", table.ratio("rls flat hybrid", "hybrid")),
        ("hybrid_search, RLS role, every leg's index on the policy's expression, p95 / unfiltered"
         " p95 (goal ≤ 1.5)", table.ratio("rls every hybrid", "hybrid")),
    ]  # fmt: skip


def dense_flat_ratios(table: Table) -> list[tuple[str, float | None]]:
    """The 10% filter's dense leg and hybrid_search through dense_flat over the same
    with pgvector's HNSW walk (documents_dense_filter_idx dropped), same run."""
    return [
        ("dense, 10% filter, dense_flat p95 / HNSW walk p95", table.ratio("filtered dense", "filtered walk dense")),
        ("dense at 100 candidates, 10% filter, dense_flat p95 / HNSW walk p95",
         table.ratio("filtered dense candidates", "filtered walk dense candidates")),
        ("hybrid_search, 10% filter, dense_flat p95 / HNSW walk p95",
         table.ratio("filtered hybrid", "filtered walk hybrid")),
        ("hybrid_search, 10% filter, HNSW walk, p95 / its unfiltered p95 (goal ≤ 1.5)",
         table.ratio("filtered walk hybrid", "hybrid")),
    ]  # fmt: skip


def latency_table(table: Table) -> list[str]:
    """The rows of every query measured, as a Markdown table."""
    return [
        "| query | p50 ms | p95 ms | p99 ms | recall@10 | full lists |",
        "|---|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in table.rows],
    ]


def command_line(args) -> str:
    """The run's command, as a report names it."""
    flags = "".join(
        f" --{name.replace('_', '-')}"
        for name in ("scale", "fusion_only", "huge_pages")
        if getattr(args, name)
    )
    if args.dense_index:
        flags += f" --dense-index {args.dense_index}"
    return (
        f"`.venv/bin/python bench/retrieval.py --docs {args.docs} --queries {args.queries}{flags}`"
    )


def resident_line(facts) -> list[str]:
    """The report's line on the benchmark's own memory, where it released the documents."""
    if "resident GB" not in facts:
        return []
    return [f"- this process's resident memory during the timings (documents released after"
            f" loading): {facts['resident GB']:.1f} GB"]  # fmt: skip


def render_fusion(args, table: Table, facts) -> str:
    """--fusion-only: the rows and hybrid_search's ratios to the legs of the same run."""
    r = table.ratio
    ratios = [("hybrid_search p95 / dense-only p95 (goal ≤ 2)", r("hybrid", "dense"))]
    ratios += candidate_ratios(table) + filter_index_ratios(table) + indexed_policy_ratios(table)
    ratios += dense_flat_ratios(table) + kept_memory_ratios(table)
    ratios.append(("dense, filter '{}' (every row), p95 / unfiltered p95",
                   r("every row filter dense", "dense")))  # fmt: skip
    ratios.append(("hybrid_search, filter '{}' (every row), p95 / unfiltered p95",
                   r("every row filter hybrid", "hybrid")))  # fmt: skip
    for tag, name in [("filtered ", "10% filter"), ("rls ", "RLS role seeing 10%")]:
        ratios += [
            (f"hybrid_search, {name}, p95 / dense-only p95 unfiltered", r(tag + "hybrid", "dense")),
            (f"hybrid_search, {name}, p95 / its unfiltered p95 (goal ≤ 1.5)",
             r(tag + "hybrid", "hybrid")),
            (f"BM25 leg, {name}, p95 / its unfiltered p95 (goal ≤ 1.5)", r(tag + "bm25", "bm25")),
        ]  # fmt: skip
    return "\n".join([
        f"# Retrieval benchmark, fusion rows only: {args.docs:,} documents",
        "",
        f"- date: {datetime.date.today()}; machine: {machine()}",
        f"- command: {command_line(args)}",
        *resident_line(facts),
        *filter_index_line(facts),
        "",
        *latency_table(table),
        "",
        "| ratio (same run) | value |",
        "|---|---|",
        *[f"| {name} | {value:.2f} |" for name, value in ratios if value is not None],
    ]) + "\n"  # fmt: skip


def render(args, table: Table, facts) -> str:
    qps = facts.get("qps", {})
    start, end = facts["load average at start"], facts["load average at end"]
    out = [
        f"# Retrieval benchmark: {args.docs:,} documents",
        "",
        f"- date: {datetime.date.today()}; machine: {machine()}",
        f"- load average (1, 5, 15 min) at start {start[0]:.1f} {start[1]:.1f} {start[2]:.1f},"
        f" at end {end[0]:.1f} {end[1]:.1f} {end[2]:.1f}",
        f"- command: {command_line(args)}",
        f"- {args.queries} queries ({args.slow_queries} for "
        + ("the RLS role's BM25 and hybrid_search rows" if args.scale
           else "the exact scans and the postings join")
        + ");"
        " query embedding excluded (vectors passed in); recall@10 against the exact top 10"
        " (numpy); full lists: queries that got as many rows as the exact answer has",
        *resident_line(facts),
        *filter_index_line(facts),
        "",
        *latency_table(table),
        "",
        "| ratio (same run) | value |",
        "|---|---|",
        *ratio_rows(table, facts),
        "",
        *([
            "| queries per second | " + " | ".join(f"{c} client{'s' * (c > 1)}" for c in CLIENTS)
            + f" | {CLIENTS[-1]} / 1 |",
            "|---|" + "---|" * (len(CLIENTS) + 1),
            *[f"| {name} | " + " | ".join(f"{v:.1f}" for v in values)
              + f" | {values[-1] / values[0]:.2f} |" for name, values in qps.items()],
            "",
        ] if qps else []),
        "| build or write | seconds |",
        "|---|---|",
        *[f"| {k.split(': ', 1)[1]} | {v:.1f} |" for k, v in facts.items()
          if k.startswith(("build: ", "churn: "))],
        "",
        "| size | MB |",
        "|---|---|",
        *[f"| {k[6:]} | {v:.0f} |" for k, v in facts.items() if k.startswith("size: ")],
    ]  # fmt: skip
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--slow-queries", type=int, default=20, help="for the exact scans")
    parser.add_argument(
        "--save",
        action="store_true",
        help="write bench/results/DATE-retrieval.md (DATE-retrieval-fusion.md with --fusion-only)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the cluster running, its indexes built again (for builds.py)",
    )
    parser.add_argument(
        "--port", type=int, default=5432, help="the throwaway cluster's (another run may hold 5432)"
    )
    parser.add_argument(
        "--fusion-only",
        action="store_true",
        help="only the three legs and hybrid_search (unfiltered, 10%% filter, RLS role):"
        " no peers, exact scans, concurrency, churn or COPY rows",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the million-row run: no Seismic, exact pgvector scans, postings join,"
        " concurrency, churn or COPY rows (module docstring)",
    )
    parser.add_argument(
        "--suffix", default="", help="appended to the saved file's name (DATE-retrieval-SUFFIX.md)"
    )
    parser.add_argument(
        "--dense-index",
        choices=sorted(DENSE_NAMES),
        help="hybrid_search_create_dense_index's method (default graph, the extension's)",
    )
    add_huge_pages_argument(parser)
    args = parser.parse_args()
    table, facts = run(
        args.docs,
        args.queries,
        args.slow_queries,
        args.keep,
        args.fusion_only,
        args.scale,
        args.port,
        args.huge_pages,
        args.dense_index,
    )
    report = render_fusion(args, table, facts) if args.fusion_only else render(args, table, facts)
    print(report)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        # the fusion rows alone never replace a full table
        suffix = "".join(f"-{part}" for part in ["fusion" * args.fusion_only, args.suffix] if part)
        name = f"{datetime.date.today()}-retrieval{suffix}.md"
        (RESULTS / name).write_text(report)
        print(f"saved bench/results/{name}")


if __name__ == "__main__":
    main()
