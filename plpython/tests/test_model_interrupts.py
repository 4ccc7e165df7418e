"""model.encode gives the server a chance to cancel between batches, and stops
at the first batch boundary when it does."""

from dataclasses import dataclass

import pytest
from hybrid_search import model
from hybrid_search.random_model import generate


@dataclass(frozen=True)
class Settings:  # only the settings object is stand-in; the model is real
    model: str
    device: str = "cpu"
    dtype: str = "fp32"
    batch_size: int = 3
    max_length: int = 64
    num_threads: int = 1
    max_content_chars: int = 1_000_000

    @property
    def dense_model(self):
        return self.model

    sparse_model = embedding_model = dense_model

    @property
    def model_key(self):
        return (self.model, self.model, self.device, self.dtype)


class Cancelled(Exception):
    """What plpy raises when a pending cancel is processed (QueryCanceled)."""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    settings = Settings(str(generate(tmp_path_factory.mktemp("m") / "tiny", size="tiny", seed=0)))
    return settings, model.get(settings)


def test_called_between_batches_only(loaded):
    settings, tiny = loaded
    calls = []
    out = model.encode(settings, tiny, [f"t {i}" for i in range(10)], lambda: calls.append(1))
    assert len(out) == 10
    assert len(calls) == 3  # 4 batches of at most 3: 3 boundaries, none before the first


def test_a_cancel_stops_at_the_next_boundary(loaded):
    settings, tiny = loaded
    before = model.stats.encode_calls

    def cancel():
        raise Cancelled

    with pytest.raises(Cancelled):
        model.encode(settings, tiny, [f"t {i}" for i in range(30)], cancel)
    assert model.stats.encode_calls - before == 1  # one batch ran, the other nine did not
