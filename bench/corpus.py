"""The retrieval benchmark's deterministic synthetic corpus and its exact references.

Clustered 1024-d unit vectors, sparse vectors over a 250,002-token vocabulary
with 60-200 Zipf-drawn tokens per document, Zipf-drawn words for full text and
10 tenants in metadata; queries of each kind, and the exact top k of each leg
by numpy brute force (peers.Postings, peers.ExactBM25)."""

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
        scores = self.dense @ self.q_dense[qi]
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        top = np.lexsort((np.arange(self.n), -scores))[:k]
        return [int(i) + 1 for i in top if np.isfinite(scores[i])]

    def exact_sparse(self, qi, k, allowed=None):
        return self.sparse_postings.top(*self.q_sparse[qi], k, allowed)

    def exact_bm25(self, qi, k, allowed=None):
        return self.bm25.top(self.q_words[qi], k, allowed)
