"""The retrieval benchmark's deterministic synthetic corpus and its exact references.

Clustered 1024-d unit vectors, sparse vectors over a 250,002-token vocabulary
with 60-200 Zipf-drawn tokens per document, Zipf-drawn words for full text and
10 tenants in metadata; queries of each kind, and the exact top k of each leg
by numpy brute force (peers.Postings, peers.ExactBM25)."""

import contextlib
import ctypes
import hashlib

import numpy as np
from peers import ExactBM25, Postings, words_text

DIM, VOCAB, WORDS, TENANTS, CLUSTERS = 1024, 250_002, 20_000, 10, 200
CHUNK = 50_000


def zipf_ids(rng, size, vocabulary, exponent=1.1):
    """Zipf-like ids in [0, vocabulary): rank r with probability ~ 1 / r**exponent."""
    return (rng.zipf(exponent, size=size) - 1) % vocabulary


def sparse_vector(rng, nnz):
    tokens = np.unique(zipf_ids(rng, nnz * 2, VOCAB))[:nnz]
    # frequent tokens weigh less, as BGE-M3's stop words do
    weights = rng.gamma(2.0, 0.08, tokens.size) * np.where(tokens < 100, 0.3, 1.0)
    return tokens.astype(np.int32), np.clip(weights, 0.01, 0.9).astype(np.float32)


def mask_key(allowed):
    """A mask of allowed rows as a dictionary key (None: every row)."""
    return None if allowed is None else hashlib.blake2b(np.packbits(allowed)).digest()


class Corpus:
    """Documents and queries, generated from a seed; ids are 1-based."""

    def __init__(self, docs: int, queries: int, seed: int = 7):
        rng = np.random.default_rng(seed)
        self.n = docs
        centroids = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
        assign = rng.integers(0, CLUSTERS, docs)
        # in chunks of rows (the same random stream as one call): a million rows at
        # once would hold four 4-8 GB temporaries
        self.dense = np.empty((docs, DIM), np.float32)
        for start in range(0, docs, CHUNK):
            rows = slice(start, min(start + CHUNK, docs))
            noise = rng.standard_normal((rows.stop - rows.start, DIM)).astype(np.float32)
            dense = centroids[assign[rows]] + 0.6 * noise
            self.dense[rows] = dense / np.linalg.norm(dense, axis=1, keepdims=True)
        self.sparse = [sparse_vector(rng, rng.integers(60, 201)) for _ in range(docs)]
        self.words = [zipf_ids(rng, rng.integers(30, 81), WORDS, 1.2) for _ in range(docs)]
        self.tenant = np.arange(docs) % TENANTS

        q_assign = rng.integers(0, CLUSTERS, queries)
        q = centroids[q_assign] + 0.8 * rng.standard_normal((queries, DIM)).astype(np.float32)
        self.q_dense = q / np.linalg.norm(q, axis=1, keepdims=True)
        self.q_sparse = [sparse_vector(rng, rng.integers(5, 16)) for _ in range(queries)]
        # two words of a random document, so that every query matches something
        picks = rng.integers(0, docs, queries)
        self.q_words = [rng.choice(self.words[p], 2, replace=False) for p in picks]
        self.q_text = [words_text(w) for w in self.q_words]
        # Seismic's search parameters are tuned on other queries than the measured ones
        tuning = np.random.default_rng(seed + 1)
        self.q_sparse_tuning = [sparse_vector(tuning, tuning.integers(5, 16)) for _ in range(100)]

    def text(self, i):
        return words_text(self.words[i])

    def build_references(self):
        """The exact numpy references: sparse postings and BM25 impacts."""
        self.sparse_postings = Postings(
            np.concatenate([np.full(t.size, i + 1) for i, (t, _) in enumerate(self.sparse)]),
            np.concatenate([t for t, _ in self.sparse]),
            np.concatenate([w for _, w in self.sparse]),
            self.n,
            VOCAB,
        )
        self.bm25 = ExactBM25(self.words, WORDS)

    def exact_dense(self, qi, k, allowed=None):
        if self.dense is None:
            kept = self.dense_tops.get((mask_key(allowed), qi))
            if kept is None or k > self.dense_top_k:
                raise RuntimeError(
                    f"dense reference of query {qi}, top {k}, was not kept before release_documents"
                )
            return kept[:k]
        return self.dense_top(self.dense @ self.q_dense[qi], k, allowed)

    def dense_top(self, scores, k, allowed):
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        top = np.lexsort((np.arange(self.n), -scores))[:k]
        return [int(i) + 1 for i in top if np.isfinite(scores[i])]

    def release_documents(self, masks, k):
        """Drops the documents (dense and sparse vectors, words: some 6 GB at a million
        rows) once the run has loaded them and built its peers, so that during the
        timings the page cache holds the database, not this process. Each query's
        exact dense top k under each of masks (None: every row) is kept first; a
        dense reference not kept is an error afterwards."""
        self.dense_tops = {}
        for qi, query in enumerate(self.q_dense):
            scores = self.dense @ query
            for mask in masks:
                self.dense_tops[mask_key(mask), qi] = self.dense_top(scores, k, mask)
        self.dense_top_k = k
        self.dense = self.sparse = self.words = None
        # glibc keeps the freed small arrays' pages (2.5 GB of 4 at a million rows)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)

    def exact_sparse(self, qi, k, allowed=None):
        return self.sparse_postings.top(*self.q_sparse[qi], k, allowed)

    def exact_bm25(self, qi, k, allowed=None):
        return self.bm25.top(self.q_words[qi], k, allowed)
