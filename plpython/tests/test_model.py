"""model: loading, caching and batching outside the database."""

from dataclasses import dataclass

import pytest
from hybrid_search import model
from hybrid_search.random_model import generate


@dataclass(frozen=True)
class FakeSettings:  # only the settings object is stand-in; the model is real
    model: str
    device: str = "cpu"
    use_fp16: bool = False
    batch_size: int = 4
    max_length: int = 512
    num_threads: int = 1

    @property
    def dense_model(self):
        return self.model

    sparse_model = embedding_model = dense_model

    @property
    def model_key(self):
        return (self.model, self.model, self.device, self.use_fp16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(generate(tmp_path_factory.mktemp("m") / "tiny", size="tiny", seed=0))


def test_loads_once_and_reports_shape(tiny):
    settings = FakeSettings(tiny)
    first = model.get(settings)
    assert model.get(settings) is first
    assert first.dense_dimensions == 32
    assert first.vocabulary_size > 1000
    assert first.max_positions == 512


def test_encode_batches(tiny):
    settings = FakeSettings(tiny, batch_size=4)
    loaded = model.get(settings)
    calls = model.stats.encode_calls
    out = model.encode(settings, loaded, [f"text {i}" for i in range(10)])
    assert len(out) == 10
    assert model.stats.encode_calls - calls == 3
    assert all(e.dense.shape == (32,) for e in out)


def test_missing_directory_is_a_clear_error():
    with pytest.raises(model.ModelNotAvailable, match="no model directory /nonexistent"):
        model.get(FakeSettings("/nonexistent/model"))


def test_hub_id_without_cache_does_not_download():
    with pytest.raises(model.ModelNotAvailable):
        model.get(FakeSettings("no-such-org/no-such-model"))
