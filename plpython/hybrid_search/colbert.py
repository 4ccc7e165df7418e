"""ColBERT (multi-vector) re-ranking with BGE-M3's ColBERT head.

A text's ColBERT vectors are one normalised vector per token (FlagEmbedding's
colbert_vecs: no CLS vector, no padding). They are stored, when
hybrid_search_settings.colbert_store is on, in documents.colbert as float16,
little-endian, row-major (tokens x dim, dim = the model's hidden size, 1024 for
BGE-M3) with no header; otherwise they are computed from the content of the
candidates being re-ranked. Recomputed vectors are rounded to float16 as well,
so a document scores the same whether its vectors were stored or not.

The score is FlagEmbedding's colbert_score: the mean over query vectors of the
largest dot product with any document vector (MaxSim).
"""

import numpy as np

STORAGE_DTYPE = np.dtype("<f2")


def to_bytes(vectors: np.ndarray) -> bytes:
    """float16 bytes of a (tokens, dim) array."""
    return np.ascontiguousarray(vectors, dtype=STORAGE_DTYPE).tobytes()


def from_bytes(data: bytes, dim: int) -> np.ndarray:
    """The (tokens, dim) float32 array stored by to_bytes."""
    flat = np.frombuffer(data, dtype=STORAGE_DTYPE)
    if flat.size % dim:
        raise ValueError(f"{len(data)} bytes are not float16 vectors of {dim} dimensions")
    return flat.reshape(-1, dim).astype(np.float32)


def rounded(vectors: np.ndarray) -> np.ndarray:
    """vectors as they come back from storage."""
    return vectors.astype(STORAGE_DTYPE).astype(np.float32)


def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """Mean over query vectors of the best dot product with a document vector."""
    if query.shape[0] == 0 or document.shape[0] == 0:
        return 0.0
    return float((query @ document.T).max(axis=1).mean())
