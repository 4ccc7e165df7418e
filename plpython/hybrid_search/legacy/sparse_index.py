"""The sparse inverted index: impact-ordered postings blocks scored with numpy.

Layout (table hybrid_search_sparse_postings): per token, its postings sorted
by weight, heaviest first, cut into blocks of BLOCK_SIZE; each block stores
packed little-endian doc ids and float32 weights plus its largest weight.

Search is exact. All weights are >= 0 (BGE-M3's are relu outputs), so a
partial sum over the blocks read so far is a lower bound of a document's
score, and sum(query weight * max weight of the next unread block) over the
query's tokens bounds what any document can still gain. Reading stops once
that bound is below the k-th best lower bound; the documents that could still
reach the top k are then scored exactly from their stored vectors. Documents
written since the last rebuild ("changes") are ignored in the postings and
scored exactly from the documents table, so results are never stale.

Everything here is plain numpy over callables that fetch data; sql_api wires
the callables to SPI.
"""

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

BLOCK_SIZE = 1024
# keep reading blocks until at most this many documents need exact scores:
# another round of blocks costs less than fetching many stored vectors
MAX_RESCORE = 512


def decode_sparsevec(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, weights) from pgvector's binary sparsevec (sparsevec_send)."""
    _, nnz, _ = struct.unpack_from(">iii", raw)
    ids = np.frombuffer(raw, ">i4", count=nnz, offset=12).astype(np.int32)
    weights = np.frombuffer(raw, ">f4", count=nnz, offset=12 + 4 * nnz).astype(np.float32)
    return ids, weights


@dataclass
class Postings:
    """All (document, token, weight) triples of a corpus, as parallel arrays."""

    doc_ids: np.ndarray
    token_ids: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_vectors(cls, rows: Iterable[tuple[int, bytes]]) -> "Postings":
        docs, tokens, weights = [], [], []
        for doc_id, raw in rows:
            ids, values = decode_sparsevec(raw)
            keep = values > 0
            tokens.append(ids[keep])
            weights.append(values[keep])
            docs.append(np.full(int(keep.sum()), doc_id, dtype=np.int64))
        if not docs:
            empty = np.empty(0)
            return cls(empty.astype(np.int64), empty.astype(np.int32), empty.astype(np.float32))
        return cls(np.concatenate(docs), np.concatenate(tokens), np.concatenate(weights))


@dataclass
class Block:
    token_id: int
    block: int
    max_weight: float
    doc_ids: bytes
    weights: bytes


def doc_id_dtype(doc_id_bytes: int) -> np.dtype:
    return np.dtype("<i4" if doc_id_bytes == 4 else "<i8")


def build_blocks(postings: Postings, block_size: int = BLOCK_SIZE) -> tuple[int, list[Block]]:
    """(doc id width in bytes, blocks): impact-ordered postings per token."""
    fits_int4 = postings.doc_ids.size == 0 or postings.doc_ids.max() < 2**31
    doc_id_bytes = 4 if fits_int4 else 8
    dtype = doc_id_dtype(doc_id_bytes)
    # token ascending, weight descending, doc id ascending (deterministic)
    order = np.lexsort((postings.doc_ids, -postings.weights, postings.token_ids))
    tokens = postings.token_ids[order]
    weights = postings.weights[order].astype("<f4")
    docs = postings.doc_ids[order].astype(dtype)
    if tokens.size == 0:
        return doc_id_bytes, []
    token_starts = np.flatnonzero(np.r_[True, tokens[1:] != tokens[:-1]])
    blocks = []
    ends = np.r_[token_starts[1:], tokens.size]
    for start, end in zip(token_starts.tolist(), ends.tolist(), strict=True):
        token = int(tokens[start])
        for number, block_start in enumerate(range(start, end, block_size)):
            block_end = min(block_start + block_size, end)
            blocks.append(
                Block(
                    token,
                    number,
                    float(weights[block_start]),
                    docs[block_start:block_end].tobytes(),
                    weights[block_start:block_end].tobytes(),
                )
            )
    return doc_id_bytes, blocks


@dataclass
class Index:
    """What a search reads, as callables over the database (or anything else)."""

    doc_id_bytes: int
    max_doc_id: int
    # [(token_id, block, max_weight)] of the query's tokens
    block_maxima: Callable[[list[int]], list[tuple[int, int, float]]]
    # [(token_id, doc_ids bytes, weights bytes)] for the requested (token, block) pairs
    read_blocks: Callable[[list[tuple[int, int]]], list[tuple[int, bytes, bytes]]]
    # doc ids written since the build (their postings are stale or missing)
    changed_ids: Callable[[], np.ndarray]
    # [(doc_id, exact score)] of the changed documents that still exist and pass the filter
    score_changed: Callable[[], list[tuple[int, float]]]
    # [(doc_id, sparsevec_send bytes)] of these documents, if visible and passing the filter
    fetch_vectors: Callable[[list[int]], list[tuple[int, bytes]]]
    # the subset of these ids that is visible and passes the filter
    visible_ids: Callable[[list[int]], set[int]]


DENSE_LIMIT = 50_000_000  # above this many ids, accumulate sparsely
MASK_TOKENS = 64  # query tokens tracked per document; any more count as never read


class _Accumulator:
    """Per document: the partial score and which query tokens' postings were read.

    Within one token's postings a document appears once, so once a document
    was met in token t's blocks its score for t is final; otherwise it can
    still gain at most (query weight x t's next block maximum). Ids up to
    DENSE_LIMIT index flat arrays; beyond, read blocks are kept and summed
    over their unique ids.
    """

    def __init__(self, max_doc_id: int):
        self.size = max_doc_id + 1
        self.flat = self.size <= DENSE_LIMIT
        if self.flat:
            self.scores = np.zeros(self.size)
            self.seen = np.zeros(self.size, np.uint64)
        self.parts: list[tuple[np.ndarray, np.ndarray, np.uint64]] = []

    def add(self, ids: np.ndarray, values: np.ndarray, bit: np.uint64) -> None:
        if self.flat:
            self.scores[ids] += values  # a document is in a token's postings once
            self.seen[ids] |= bit
        else:
            self.parts.append((ids.astype(np.int64), values, bit))

    def totals(self, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, partial scores, read-token masks) of every document met so far."""
        if self.flat:
            ids = np.flatnonzero(self.scores)
            scores, seen = self.scores[ids], self.seen[ids]
        elif self.parts:
            all_ids = np.concatenate([i for i, _, _ in self.parts])
            ids, inverse = np.unique(all_ids, return_inverse=True)
            values = np.concatenate([v for _, v, _ in self.parts])
            scores = np.bincount(inverse, weights=values, minlength=ids.size)
            seen = np.zeros(ids.size, np.uint64)
            bits = np.concatenate([np.full(i.size, b, np.uint64) for i, _, b in self.parts])
            np.bitwise_or.at(seen, inverse, bits)
        else:
            return np.empty(0, np.int64), np.empty(0), np.empty(0, np.uint64)
        live = ~np.isin(ids, exclude)
        return ids[live].astype(np.int64), scores[live], seen[live]


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (id, score) with score > 0, score descending then id ascending."""
    keep = scores > 0
    ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


def exact_scores(query: dict[int, float], vectors: list[tuple[int, bytes]]) -> dict[int, float]:
    """Exact lexical scores of documents from their stored vectors, in one numpy pass."""
    if not vectors:
        return {}
    query_tokens = np.array(sorted(query), dtype=np.int64)
    query_weights = np.array([query[t] for t in query_tokens.tolist()])
    decoded = [decode_sparsevec(raw) for _, raw in vectors]
    owner = np.repeat(np.arange(len(decoded)), [t.size for t, _ in decoded])
    tokens = np.concatenate([t for t, _ in decoded]).astype(np.int64)
    weights = np.concatenate([w for _, w in decoded]).astype(np.float64)
    at = np.minimum(np.searchsorted(query_tokens, tokens), query_tokens.size - 1)
    hit = query_tokens[at] == tokens
    totals = np.bincount(
        owner[hit], weights=weights[hit] * query_weights[at[hit]], minlength=len(decoded)
    )
    return {doc_id: float(total) for (doc_id, _), total in zip(vectors, totals, strict=True)}


def _kth(values: np.ndarray, k: int) -> float:
    return float(np.partition(values, values.size - k)[values.size - k])


def search(
    index: Index, query: dict[int, float], k: int, filtered: bool
) -> list[tuple[int, float]]:
    """The k best (doc_id, score) with score > 0, exact, ties broken by id.

    Unfiltered queries stop reading blocks early (see the module docstring);
    filtered ones read every block of the query's tokens and then walk the
    candidates best-first, checking the filter in growing batches, so that k
    results come back whenever k matching documents exist.
    """
    query = {t: w for t, w in query.items() if w > 0}
    if not query:
        return []
    dtype = doc_id_dtype(index.doc_id_bytes)
    changed = index.changed_ids()
    fresh = dict(index.score_changed())  # exact, filtered, live
    fresh_ids = np.fromiter(fresh.keys(), np.int64, len(fresh))
    fresh_scores = np.fromiter(fresh.values(), np.float64, len(fresh))

    maxima: dict[int, list[float]] = {}
    for token, _, max_weight in sorted(index.block_maxima(list(query))):
        maxima.setdefault(token, []).append(max_weight)
    next_block = dict.fromkeys(maxima, 0)
    # the tokens that can add the most get a bit each in the per-document masks
    by_potential = sorted(maxima, key=lambda t: -query[t] * maxima[t][0])
    bits = {t: np.uint64(1 << i) for i, t in enumerate(by_potential[:MASK_TOKENS])}
    acc = _Accumulator(index.max_doc_id)

    def read(requests: list[tuple[int, int]]) -> None:
        # one numpy operation per token, however many of its blocks were read
        per_token: dict[int, tuple[list[bytes], list[bytes]]] = {}
        for token, raw_ids, raw_weights in index.read_blocks(requests):
            ids, weights = per_token.setdefault(token, ([], []))
            ids.append(raw_ids)
            weights.append(raw_weights)
        for token, (ids, weights) in per_token.items():
            acc.add(
                np.frombuffer(b"".join(ids), dtype),
                np.frombuffer(b"".join(weights), "<f4") * query[token],
                bits.get(token, np.uint64(0)),
            )

    # Greedy rounds: read more blocks of the tokens that can still add the most
    # (query weight x next block's maximum); a token's chunk doubles each time.
    chunk = dict.fromkeys(next_block, 1)
    while True:
        potential = {
            t: query[t] * maxima[t][b] for t, b in next_block.items() if b < len(maxima[t])
        }
        if not potential:
            break
        cutoff = max(potential.values()) / 4 if not filtered else 0.0
        chosen = [t for t, p in potential.items() if p >= cutoff]
        read(
            [
                (t, b)
                for t in chosen
                for b in range(next_block[t], min(next_block[t] + chunk[t], len(maxima[t])))
            ]
        )
        for t in chosen:
            next_block[t] = min(next_block[t] + chunk[t], len(maxima[t]))
            chunk[t] *= 2
        if filtered:
            continue  # a filter needs every candidate's exact score
        settled, best = _pruned_top(
            index, query, k, acc, changed, fresh, fresh_scores, maxima, next_block, bits
        )
        if settled:
            return best
        if best is not None:
            break  # documents above the threshold are hidden from this role

    while any(b < len(maxima[t]) for t, b in next_block.items()):
        read([(t, b) for t, first in next_block.items() for b in range(first, len(maxima[t]))])
        next_block = {t: len(maxima[t]) for t in next_block}

    # every block read: partial scores are exact; check visibility and filter best-first
    ids, partial, _ = acc.totals(changed)
    ids = np.concatenate([ids, fresh_ids])
    partial = np.concatenate([partial, fresh_scores])
    keep = partial > 0
    ids, partial = ids[keep], partial[keep]
    order = np.lexsort((ids, -partial))
    results: list[tuple[int, float]] = []
    start, batch = 0, max(4 * k, 256)
    while len(results) < k and start < order.size:
        window = [(int(ids[i]), float(partial[i])) for i in order[start : start + batch]]
        pending = [doc_id for doc_id, _ in window if doc_id not in fresh]
        visible = index.visible_ids(pending) if pending else set()
        results.extend((d, s) for d, s in window if d in fresh or d in visible)
        start += batch
        batch *= 4
    return results[:k]


def _pruned_top(index, query, k, acc, changed, fresh, fresh_scores, maxima, next_block, bits):
    """(True, the exact top k) if the blocks read so far settle it; (False, None)
    if more blocks must be read; (False, partial result) if documents this role
    cannot see made the threshold unreliable (then every block must be read).

    Settled means: no unmet document can reach the k-th best partial score,
    and at most MAX_RESCORE met ones still could; those are scored exactly
    from their stored vectors, which also drops any this role cannot see.
    """
    ids, partial, seen = acc.totals(changed)
    pool = np.concatenate([partial, fresh_scores])
    if pool.size < k:
        return False, None
    threshold = _kth(pool, k)
    potential = {t: query[t] * maxima[t][b] for t, b in next_block.items() if b < len(maxima[t])}
    if sum(potential.values()) >= threshold:
        return False, None  # a document met in no block read yet could still make the top k
    # what each met document can still gain: the tokens whose postings have
    # unread blocks and did not contain it so far
    near = partial + sum(potential.values()) >= threshold
    ids, partial, seen = ids[near], partial[near], seen[near]
    gain = np.zeros(ids.size)
    for t, p in potential.items():
        bit = bits.get(t)
        gain += p if bit is None else np.where(seen & bit, 0.0, p)
    contenders = ids[partial + gain >= threshold]
    if contenders.size > MAX_RESCORE:
        return False, None
    # contenders with nothing left to gain already hold their exact score; they
    # are fetched anyway (k or so of them) to drop documents this role cannot see
    exact = exact_scores(query, index.fetch_vectors(contenders.tolist()))
    exact.update(fresh)
    best = _top(
        np.fromiter(exact.keys(), np.int64, len(exact)),
        np.fromiter(exact.values(), np.float64, len(exact)),
        k,
    )
    return len(best) == k and best[-1][1] >= threshold, best
