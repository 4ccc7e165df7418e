"""Conversions between model outputs and pgvector's text formats.

PL/Python hands a returned string to the type's input function, so text is
the one format that works for both vector and sparsevec. sparsevec indices
are 1-based, token ids 0-based: index = token id + 1.
"""

from collections.abc import Mapping

import numpy as np


def dense_literal(vector: np.ndarray) -> str:
    """'[x1,x2,...]' for pgvector's vector type (float32 values round-trip exactly)."""
    values = np.asarray(vector, dtype=np.float32).tolist()
    return "[" + ",".join(repr(v) for v in values) + "]"


def sparse_literal(weights: Mapping[str | int, float], dimensions: int) -> str:
    """'{id+1:w,...}/dimensions' for sparsevec from {token_id: weight}."""
    entries = sorted((int(token), float(np.float32(w))) for token, w in weights.items() if w != 0)
    for token, _ in entries:
        if not 0 <= token < dimensions:
            raise ValueError(f"token id {token} is outside the vocabulary of {dimensions}")
    body = ",".join(f"{token + 1}:{weight!r}" for token, weight in entries)
    return "{" + body + "}/" + str(dimensions)
