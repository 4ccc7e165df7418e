"""encoding.encode gives the server a chance to cancel between batches, and stops
at the first batch boundary when it does."""

import pytest
from hybrid_search import encoders, encoding
from hybrid_search_tools.random_model import generate
from model_settings import ModelSettings


class Cancelled(Exception):
    """What plpy raises when a pending cancel is processed (QueryCanceled)."""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    tiny = generate(tmp_path_factory.mktemp("m") / "tiny", size="tiny", seed=0)
    settings = ModelSettings(str(tiny), batch_size=3, max_length=64)
    return settings, encoders.get(settings)


def test_called_between_batches_only(loaded):
    settings, tiny = loaded
    calls = []
    out = encoding.encode(settings, tiny, [f"t {i}" for i in range(10)], lambda: calls.append(1))
    assert len(out) == 10
    assert len(calls) == 3  # 4 batches of at most 3: 3 boundaries, none before the first


def test_a_cancel_stops_at_the_next_boundary(loaded):
    settings, tiny = loaded
    before = encoding.stats.encode_calls

    def cancel():
        raise Cancelled

    with pytest.raises(Cancelled):
        encoding.encode(settings, tiny, [f"t {i}" for i in range(30)], cancel)
    assert encoding.stats.encode_calls - before == 1  # one batch ran, the other nine did not
