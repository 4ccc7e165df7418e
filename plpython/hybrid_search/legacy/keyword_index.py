"""Okapi BM25 over PostgreSQL lexemes, on the sparse leg's inverted index.

A document's postings weight for a lexeme is BM25's term-frequency part,
computed with the average length of the build:

    tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length))

and a query weights each of its lexemes by idf (Lucene's, never negative)
times how often the query repeats it. A document's score is then the dot
product of the two, which is exactly what sparse_index.search computes over
impact-ordered blocks, so the keyword leg reuses that search unchanged.

tf is the number of positions of the lexeme in documents.fts and a
document's length the sum over its lexemes (a lexeme stored without positions
counts once). Statistics (document count, average length, document
frequencies) are those of the last build; documents written since are scored
with them too.
"""

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import sparse_index


@dataclass(frozen=True)
class Statistics:
    documents: int
    avg_length: float
    k1: float
    b: float


def idf(documents: int, document_frequency: int) -> float:
    """Lucene's BM25 idf: ln(1 + (N - df + 0.5) / (df + 0.5)), > 0 for every df <= N."""
    df = min(document_frequency, documents)
    return math.log(1.0 + (documents - df + 0.5) / (df + 0.5))


def tf_part(tf: np.ndarray, length: np.ndarray, stats: Statistics) -> np.ndarray:
    """BM25's saturated, length-normalised term frequency."""
    norm = 1.0 - stats.b + stats.b * length / stats.avg_length if stats.avg_length > 0 else 1.0
    return tf * (stats.k1 + 1.0) / (tf + stats.k1 * norm)


def score(
    query: dict[str, float], lexemes: list[str], tfs: list[int], length: int, stats: Statistics
) -> float:
    """BM25 of one document (its query lexemes with their tf, and its length)."""
    weights = tf_part(np.asarray(tfs, float), np.full(len(tfs), float(length)), stats)
    return float(sum(query[lexeme] * w for lexeme, w in zip(lexemes, weights, strict=True)))


def query_weights(
    query_tf: dict[str, int], document_frequency: dict[str, int], documents: int
) -> dict[str, float]:
    """idf x repetitions for every query lexeme (a lexeme unknown to the build has df 0)."""
    return {
        lexeme: count * idf(documents, document_frequency.get(lexeme, 0))
        for lexeme, count in query_tf.items()
    }


def encode_vector(token_ids: list[int], weights: list[float]) -> bytes:
    """Weights in pgvector's sparsevec_send layout, which sparse_index decodes."""
    order = sorted(range(len(token_ids)), key=token_ids.__getitem__)
    ids = [token_ids[i] for i in order]
    return (
        struct.pack(">iii", 0, len(ids), 0)
        + struct.pack(f">{len(ids)}i", *ids)
        + struct.pack(f">{len(ids)}f", *(weights[i] for i in order))
    )


@dataclass
class Build:
    """What a rebuild stores: the lexeme dictionary, statistics and postings blocks."""

    lexemes: list[str]  # token id = position
    document_frequency: np.ndarray
    documents: int
    avg_length: float
    max_doc_id: int
    doc_id_bytes: int
    postings: int
    blocks: list[sparse_index.Block]


def build(
    rows: Iterable[tuple[int, list[str] | None, list[int] | None]],
    k1: float,
    b: float,
    block_size: int = sparse_index.BLOCK_SIZE,
) -> Build:
    """Blocks of BM25 tf-parts from (doc id, lexemes, tfs) rows."""
    ids: dict[str, int] = {}
    docs, tokens, tfs, lengths = [], [], [], {}
    for doc_id, lexemes, counts in rows:
        lexemes, counts = lexemes or [], counts or []
        lengths[doc_id] = sum(counts)
        docs.extend([doc_id] * len(lexemes))
        tokens.extend(ids.setdefault(lexeme, len(ids)) for lexeme in lexemes)
        tfs.extend(counts)
    documents = len(lengths)
    avg_length = sum(lengths.values()) / documents if documents else 0.0
    stats = Statistics(documents, avg_length, k1, b)
    doc_ids = np.asarray(docs, np.int64)
    token_ids = np.asarray(tokens, np.int32)
    length = np.fromiter((lengths[d] for d in docs), float, len(docs))
    weights = tf_part(np.asarray(tfs, float), length, stats).astype(np.float32)
    doc_id_bytes, blocks = sparse_index.build_blocks(
        sparse_index.Postings(doc_ids, token_ids, weights), block_size
    )
    return Build(
        lexemes=list(ids),
        document_frequency=np.bincount(token_ids, minlength=len(ids)),
        documents=documents,
        avg_length=avg_length,
        max_doc_id=max(lengths, default=0),
        doc_id_bytes=doc_id_bytes,
        postings=int(doc_ids.size),
        blocks=blocks,
    )
