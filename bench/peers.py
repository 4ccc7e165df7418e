"""The in-process peers bench/retrieval.py compares the database's legs with, on
the same corpus and queries: an exact numpy BM25, Seismic (approximate learned
sparse) and tantivy (BM25). Seismic and tantivy come from requirements/bench.lock,
which `hybrid-search bench` installs into the project's .venv; the product never
imports them."""

import tempfile
import time
from pathlib import Path

import numpy as np

# BM25 parameters of the keyword leg (hybrid_search_settings' defaults) and tantivy's
K1, B = 1.2, 0.75


class Postings:
    """Postings sorted by term, scored exactly by a numpy brute force: the reference
    for a leg that ranks documents by a sum over the query's terms of query weight
    times document weight (the sparse leg, and BM25 once its weights are BM25's)."""

    def __init__(self, docs: np.ndarray, terms: np.ndarray, weights: np.ndarray, n: int, vocab):
        order = np.argsort(terms, kind="stable")
        # ids in 32 bits and weights as given (float32 for sparse vectors): half the
        # memory at a million rows; scores are summed in float64 all the same
        self.docs, self.weights = docs[order].astype(np.int32), weights[order]
        self.starts = np.searchsorted(terms[order], np.arange(vocab + 1))
        self.n = n

    def scores(self, terms, query_weights) -> np.ndarray:
        """Every document's score, indexed by id (index 0 unused)."""
        scores = np.zeros(self.n + 1)
        for t, w in zip(terms, query_weights, strict=True):
            a, b = self.starts[t], self.starts[t + 1]
            scores[self.docs[a:b]] += np.multiply(self.weights[a:b], float(w), dtype=np.float64)
        return scores

    def top(self, terms, query_weights, k, allowed=None) -> list[int]:
        """Ids (1-based) of the k best documents with a score > 0, ties by id."""
        scores = self.scores(terms, query_weights)
        if allowed is not None:
            scores[1:][~allowed] = 0
        top = np.lexsort((np.arange(self.n + 1), -scores))[:k]
        return [int(i) for i in top if scores[i] > 0]


class ExactBM25:
    """Okapi BM25 with OR semantics over each document's words, as the keyword leg
    scores them (Lucene's idf; tf = repetitions, length = words, statistics of the
    whole corpus), as a sparse dot product over precomputed impacts."""

    def __init__(self, words: list[np.ndarray], vocab: int):
        n = len(words)
        doc_of, term_of, tfs, lengths = [], [], [], np.array([w.size for w in words], float)
        for i, w in enumerate(words):
            terms, counts = np.unique(w, return_counts=True)
            doc_of.append(np.full(terms.size, i + 1))
            term_of.append(terms)
            tfs.append(counts)
        docs, terms, tf = np.concatenate(doc_of), np.concatenate(term_of), np.concatenate(tfs)
        norm = 1.0 - B + B * lengths[docs - 1] / lengths.mean()
        impacts = tf * (K1 + 1.0) / (tf + K1 * norm)
        df = np.bincount(terms, minlength=vocab)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        self.postings = Postings(docs, terms, impacts, n, vocab)

    def query(self, query_words: np.ndarray):
        """(terms, weights): each word once, weighted by idf times its repetitions."""
        terms, repeats = np.unique(query_words, return_counts=True)
        return terms, repeats * self.idf[terms]

    def top(self, query_words: np.ndarray, k: int, allowed=None) -> list[int]:
        return self.postings.top(*self.query(query_words), k, allowed)

    def scores(self, query_words: np.ndarray) -> np.ndarray:
        return self.postings.scores(*self.query(query_words))


class Seismic:
    """Seismic's large-vocabulary index over the sparse vectors (pyseismic-lsr), tuned
    on a separate set of queries: for each build setting (how many postings a token
    keeps), the cheapest search setting reaching the target recall@10, and of those
    the fastest. One build thread, as one PostgreSQL backend."""

    # postings kept per token on average (Seismic's n_postings; its default is 3500,
    # for MS MARCO's 8.8M passages): pruning the long lists is what makes it fast
    N_POSTINGS = (1000, 3500)
    # heap_factor: a block is skipped when its summary's score, over heap_factor,
    # stays below the current k-th best, so a lower value scans more (slower, exacter)
    HEAP_FACTORS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)

    def __init__(self, sparse: list[tuple[np.ndarray, np.ndarray]], vocab: int):
        import seismic

        self.seismic = seismic
        self.string = seismic.get_seismic_string()
        self.dataset = seismic.SeismicDatasetLV(dim=vocab)
        offsets = np.cumsum([0] + [t.size for t, _ in sparse]).astype(np.int64)
        self.dataset.add_documents_by_id(
            [str(i + 1) for i in range(len(sparse))],
            np.concatenate([t for t, _ in sparse]).astype(np.int64),
            np.concatenate([w for _, w in sparse]).astype(np.float32),
            offsets,
        )
        self.index, self.query_cut = None, 100  # every query token

    def build(self, n_postings):
        started = time.perf_counter()
        self.index = self.seismic.SeismicIndexLV.build_from_dataset(
            self.dataset, n_postings=n_postings, num_threads=1
        )
        self.n_postings, self.build_s = n_postings, time.perf_counter() - started

    def search(self, tokens: np.ndarray, weights: np.ndarray, k: int = 10) -> list[int]:
        hits = self.index.search(
            "q",
            tokens.astype(str).astype(self.string),
            weights.astype(np.float32),
            k,
            self.query_cut,
            self.heap_factor,
        )
        return [int(doc) for _, _, doc in hits]

    def tune(self, queries, exact, target: float = 0.95) -> float:
        """Builds the index with each of N_POSTINGS and keeps the build and heap_factor
        of least mean latency on queries among those reaching target mean recall@10
        against exact(query) (or, if none does, of the best recall); returns that recall."""
        references = [exact(q) for q in queries]
        best = None  # (reached target, -latency or recall, n_postings, heap_factor, recall)
        for n_postings in self.N_POSTINGS:
            self.build(n_postings)
            for heap_factor in self.HEAP_FACTORS:
                self.heap_factor = heap_factor
                started = time.perf_counter()
                found = [self.search(*q) for q in queries]
                latency = time.perf_counter() - started
                mean = float(
                    np.mean([recall(f, r) for f, r in zip(found, references, strict=True)])
                )
                candidate = (mean >= target, -latency if mean >= target else mean, n_postings,
                             heap_factor, mean)  # fmt: skip
                best = max(best or candidate, candidate)
                if mean >= target:
                    break
        _, _, n_postings, self.heap_factor, mean = best
        if n_postings != self.n_postings:
            self.build(n_postings)
        with tempfile.TemporaryDirectory() as scratch:
            self.index.save(str(Path(scratch) / "seismic"))
            self.size_mb = sum(f.stat().st_size for f in Path(scratch).iterdir()) / 2**20
        return mean


class Tantivy:
    """A tantivy index of each document's words (whitespace-split, no stemming, no
    stop words: the same terms as the database's lexemes), queried with a BM25 OR
    over the query's words, top k without counting matches."""

    def __init__(self, words: list[np.ndarray]):
        import tantivy

        self.tantivy = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("id", stored=True, fast=True)
        builder.add_text_field("body", tokenizer_name="whitespace", index_option="freq")
        self.schema = builder.build()
        self.directory = tempfile.TemporaryDirectory(prefix="hybrid_search_tantivy_")
        started = time.perf_counter()
        index = tantivy.Index(self.schema, path=self.directory.name)
        writer = index.writer(heap_size=1_000_000_000, num_threads=1)
        for i, w in enumerate(words):
            writer.add_document(tantivy.Document(id=i + 1, body=words_text(w)))
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        self.build_s = time.perf_counter() - started
        self.size_mb = sum(f.stat().st_size for f in Path(self.directory.name).iterdir()) / 2**20
        self.searcher = index.searcher()
        # with one segment holding the documents in insertion order, an address is an id
        self.one_segment = self.searcher.num_segments == 1

    def search(self, query_words: np.ndarray, k: int = 10) -> list[int]:
        query = self.tantivy.Query.boolean_query(
            [
                (self.tantivy.Occur.Should, self.tantivy.Query.term_query(self.schema, "body", t))
                for t in words_text(query_words).split()
            ]
        )
        hits = self.searcher.search(query, limit=k, count=False).hits
        if self.one_segment:
            return [address.doc + 1 for _, address in hits]
        return [self.searcher.doc(address)["id"][0] for _, address in hits]

    def close(self):
        self.directory.cleanup()


def words_text(words: np.ndarray) -> str:
    return " ".join(f"w{w}" for w in words)


def recall(found, expected, k=10) -> float:
    expected = expected[:k]
    if not expected:
        return 1.0
    return len(set(found[:k]) & set(expected)) / len(expected)


def overlap(a, b, k=10) -> float:
    """|top-k of a ∩ top-k of b| / k (or / the shorter list when both are short)."""
    size = min(k, max(len(a[:k]), len(b[:k])))
    return 1.0 if size == 0 else len(set(a[:k]) & set(b[:k])) / size
