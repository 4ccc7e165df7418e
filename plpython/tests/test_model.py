"""model: loading, caching and batching outside the database."""

from pathlib import Path

import numpy as np
import pytest
from hybrid_search import encoders, encoding
from hybrid_search_tools.random_model import generate
from model_settings import ModelSettings as FakeSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(generate(tmp_path_factory.mktemp("m") / "tiny", size="tiny", seed=0))


def test_loads_once_and_reports_shape(tiny):
    settings = FakeSettings(tiny)
    first = encoders.get(settings)
    assert encoders.get(settings) is first
    assert first.dense_dimensions == 32
    assert first.vocabulary_size > 1000
    assert first.max_positions == 512


def test_encode_batches(tiny):
    settings = FakeSettings(tiny, batch_size=4)
    loaded = encoders.get(settings)
    calls = encoding.stats.encode_calls
    out = encoding.encode(settings, loaded, [f"text {i}" for i in range(10)])
    assert len(out) == 10
    assert encoding.stats.encode_calls - calls == 3
    assert all(e.dense.shape == (32,) for e in out)


def test_missing_directory_is_a_clear_error():
    with pytest.raises(encoding.ModelNotAvailable, match="no model directory /nonexistent"):
        encoders.get(FakeSettings("/nonexistent/model"))


def test_hub_id_without_cache_does_not_download():
    with pytest.raises(encoding.ModelNotAvailable):
        encoders.get(FakeSettings("no-such-org/no-such-model"))


def test_refuses_texts_over_max_content_chars(tiny):
    settings = FakeSettings(tiny, max_content_chars=50)
    loaded = encoders.get(settings)
    assert len(encoding.encode(settings, loaded, ["x" * 50])) == 1
    with pytest.raises(encoding.ContentTooLong, match="51 characters exceeds max_content_chars"):
        encoding.encode(settings, loaded, ["short", "x" * 51])


def test_the_query_cache_skips_the_forward_pass_for_a_repeated_text(tiny):
    settings = FakeSettings(tiny)
    loaded = encoders.get(settings)
    calls, hits = encoding.stats.encode_calls, encoding.stats.query_cache_hits
    first = encoding.encode_query(settings, loaded, "how to vacuum a table")
    again = encoding.encode_query(settings, loaded, "how to vacuum a table")
    assert again is first
    assert (encoding.stats.encode_calls, encoding.stats.query_cache_hits) == (calls + 1, hits + 1)
    other = encoding.encode_query(
        FakeSettings(tiny, max_length=16), loaded, "how to vacuum a table"
    )
    assert other is not first  # another max_length is another embedding


def test_batches_match_flag_embeddings_encode(tiny):
    # our batching (longest first, no trial pass) gives FlagEmbedding's numbers
    settings = FakeSettings(tiny, batch_size=2)
    loaded = encoders.get(settings)
    texts = ["a", "a much longer text about write-ahead logging and replicas", "mid size text"]
    ours = encoding.encode(settings, loaded, texts)
    reference = loaded.flag_model.encode(texts, batch_size=8, return_sparse=True)
    for mine, dense, weights in zip(
        ours, reference["dense_vecs"], reference["lexical_weights"], strict=True
    ):
        assert np.allclose(mine.dense, dense, atol=1e-5)
        assert mine.lexical_weights.keys() == weights.keys()
        assert np.allclose(
            [mine.lexical_weights[t] for t in weights], [weights[t] for t in weights], atol=1e-5
        )


@pytest.mark.parametrize(("dtype", "closeness"), [("bf16", 0.98), ("int8", 0.9)])
def test_other_numeric_formats_agree_with_fp32(tiny, dtype, closeness):
    texts = ["vacuum and analyze", "replication slots keep WAL around"]
    reference = encoding.encode(FakeSettings(tiny), encoders.get(FakeSettings(tiny)), texts)
    settings = FakeSettings(tiny, dtype=dtype)
    loaded = encoders.get(settings)
    assert encoders.get(FakeSettings(tiny)) is not loaded  # another format is another model
    for ours, ref in zip(encoding.encode(settings, loaded, texts), reference, strict=True):
        cosine = float(np.dot(ours.dense, ref.dense) / np.linalg.norm(ours.dense))
        assert cosine > closeness
        assert ours.lexical_weights.keys() & ref.lexical_weights.keys()


def test_converted_bf16_weights_load_as_bf16_and_agree(tiny, tmp_path):
    from hybrid_search.convert import convert
    from safetensors import safe_open

    target = convert(Path(tiny), tmp_path / "bf16", "bf16")
    with safe_open(str(target / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(name).dtype) for name in f.keys()} == {"torch.bfloat16"}  # noqa: SIM118
    texts = ["checkpoints and WAL"]
    reference = encoding.encode(FakeSettings(tiny), encoders.get(FakeSettings(tiny)), texts)[0]
    settings = FakeSettings(str(target), dtype="bf16")
    loaded = encoders.get(settings)
    assert str(next(loaded.flag_model.model.parameters()).dtype) == "torch.bfloat16"
    ours = encoding.encode(settings, loaded, texts)[0]
    assert float(np.dot(ours.dense, reference.dense)) > 0.98


def test_colbert_vectors_only_when_asked_for(tiny):
    settings = FakeSettings(tiny)
    loaded = encoders.get(settings)
    computed = encoding.stats.colbert_texts
    (plain,) = encoding.encode(settings, loaded, ["vacuum reclaims dead tuples"])
    assert plain.colbert is None
    assert encoding.stats.colbert_texts == computed
    (full,) = encoding.encode(settings, loaded, ["vacuum reclaims dead tuples"], colbert=True)
    assert encoding.stats.colbert_texts == computed + 1
    assert np.array_equal(full.dense, plain.dense)
    tokens = loaded.flag_model.tokenizer("vacuum reclaims dead tuples")["input_ids"]
    assert full.colbert.shape == (len(tokens) - 1, loaded.colbert_dimensions)
    assert np.linalg.norm(full.colbert, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_colbert_vectors_for_a_cached_query_keep_its_vectors(tiny):
    # another thread count may change the last bits: the query's vectors stay the first ones
    loaded = encoders.get(FakeSettings(tiny))
    text = "a query re-ranked after it was searched"
    first = encoding.encode_query(FakeSettings(tiny, query_threads=1), loaded, text)
    full = encoding.encode_query(FakeSettings(tiny, query_threads=2), loaded, text, colbert=True)
    assert full.colbert is not None and first.colbert is None
    assert full.dense is first.dense and full.lexical_weights is first.lexical_weights
    assert encoding.encode_query(FakeSettings(tiny), loaded, text) is full


def test_queries_and_writes_run_on_their_own_thread_counts(tiny):
    import torch

    settings = FakeSettings(tiny, num_threads=1, query_threads=2)
    loaded = encoders.get(settings)
    encoding.encode_query(settings, loaded, "a query on two threads")
    assert torch.get_num_threads() == 2
    encoding.encode(settings, loaded, ["a write on one thread"])
    assert torch.get_num_threads() == 1


def test_automatic_query_threads_use_the_cores_nothing_else_runs_on():
    from hybrid_search.settings import idle_cores

    assert idle_cores("0.10 0.20 0.30 1/345 999", cores=2) == 2  # only this process runs
    assert idle_cores("3.10 2.20 2.30 2/345 999", cores=2) == 1
    assert idle_cores("7.00 6.00 5.00 9/345 999", cores=8) == 1
    assert idle_cores("1.00 1.00 1.00 3/345 999", cores=8) == 6
    assert idle_cores("garbage", cores=4) == 1
