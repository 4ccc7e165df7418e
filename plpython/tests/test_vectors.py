"""vectors: model output -> pgvector text, outside the database."""

import numpy as np
import pytest
from hybrid_search import vectors


def test_dense_literal_round_trips_float32():
    values = np.array([0.1, -2.5, 1e-8, 3.4028235e38], dtype=np.float32)
    text = vectors.dense_literal(values)
    assert text.startswith("[") and text.endswith("]")
    parsed = np.array([float(v) for v in text[1:-1].split(",")], dtype=np.float32)
    assert np.array_equal(parsed, values)


def test_sparse_literal_is_one_based_and_sorted():
    weights = {"7": np.float32(0.5), "2": np.float32(0.25), "9": np.float32(0.0)}
    assert vectors.sparse_literal(weights, 10) == "{3:0.25,8:0.5}/10"


def test_sparse_literal_of_nothing():
    assert vectors.sparse_literal({}, 5) == "{}/5"


@pytest.mark.parametrize("token", ["10", "-1"])
def test_sparse_literal_rejects_ids_outside_the_vocabulary(token):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vectors.sparse_literal({token: 1.0}, 10)
