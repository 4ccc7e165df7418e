"""numerics: the automatic number format, from simulated CPU flags, and the converted
weights it loads; agreement of every format it can choose with fp32."""

import os
import shutil

import numpy as np
import pytest
from hybrid_search import encoders, encoding, numerics, packing
from hybrid_search_tools.random_model import builtin_corpus, generate
from model_settings import ModelSettings as FakeSettings

BGE_M3 = 302_000_000  # BGE-M3's matmul weights per token (matmul_parameters of its config)
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
NO_BF16 = frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni", "amx_int8"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(generate(tmp_path_factory.mktemp("m") / "tiny", size="tiny", seed=0))


def test_a_cpu_with_amx_or_avx512_bf16_chooses_bf16_for_a_big_model():
    dtype, reason = numerics.choose("auto", SAPPHIRE_RAPIDS, "cpu", BGE_M3)
    assert (dtype, "amx_bf16" in reason) == ("bf16", True)
    dtype, reason = numerics.choose("auto", ZEN4, "cpu", BGE_M3)
    assert (dtype, "avx512_bf16" in reason) == ("bf16", True)


def test_a_cpu_without_bf16_units_chooses_fp32_and_says_why():
    dtype, reason = numerics.choose("auto", NO_BF16, "cpu", BGE_M3)
    assert dtype == "fp32"
    assert "no bf16 units" in reason and "emulated" in reason
    # int8 units alone do not make it choose int8 (private weights, lower agreement)
    assert numerics.choose("auto", frozenset(), "cpu", BGE_M3)[0] == "fp32"


def test_small_models_other_devices_and_a_dba_choice():
    assert numerics.choose("auto", SAPPHIRE_RAPIDS, "cpu", 16_384)[0] == "fp32"
    assert "small model" in numerics.choose("auto", SAPPHIRE_RAPIDS, "cpu", 16_384)[1]
    assert numerics.choose("auto", SAPPHIRE_RAPIDS, "cuda", BGE_M3)[0] == "fp32"
    assert numerics.choose("int8", NO_BF16, "cpu", BGE_M3) == (
        "int8",
        "configured: hybrid_search_configure(dtype => 'int8')",
    )


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nflags : x\n")
    assert numerics.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "amx_bf16"}
    assert numerics.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_bge_m3_shapes_count_as_big(tmp_path):
    import json

    (tmp_path / "config.json").write_text(
        json.dumps({"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096})
    )
    assert numerics.matmul_parameters(str(tmp_path)) == 24 * (4 * 1024**2 + 2 * 1024 * 4096)
    assert numerics.matmul_parameters(str(tmp_path)) > numerics.MIN_BF16_PARAMETERS


def test_prepare_converts_once_and_backends_load_the_copy(tiny, tmp_path, monkeypatch):
    source = tmp_path / "model"
    shutil.copytree(tiny, source)
    monkeypatch.setattr(numerics, "MIN_BF16_PARAMETERS", 0)  # the tiny model counts as big
    # no converted copy yet: 'auto' computes in fp32 rather than converting privately
    before = numerics.resolve(str(source), "auto", "cpu", SAPPHIRE_RAPIDS)
    assert before.dtype == "fp32" and "no converted copy" in before.reason
    choice = numerics.prepare(str(source), "auto", "cpu", SAPPHIRE_RAPIDS)
    copy = tmp_path / "model-bf16"
    assert (choice.dtype, choice.location) == ("bf16", str(copy))
    assert "converted once" in choice.reason
    written = (copy / "model.safetensors").stat().st_mtime_ns
    assert numerics.prepare(str(source), "auto", "cpu", SAPPHIRE_RAPIDS).location == str(copy)
    assert (copy / "model.safetensors").stat().st_mtime_ns == written  # not converted again
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # the same directory on a CPU without bf16: fp32 from the original files
    plain = numerics.prepare(str(source), "auto", "cpu", NO_BF16)
    assert (plain.dtype, plain.location) == ("fp32", str(source))
    # new weights in the source make the copy stale
    weights = source / "model.safetensors"
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 10))
    assert numerics.resolve(str(source), "auto", "cpu", SAPPHIRE_RAPIDS).dtype == "fp32"


def test_a_model_loaded_with_auto_reports_its_choice(tiny):
    loaded = encoders.get(FakeSettings(tiny, dtype="auto"))
    assert loaded.dtype == "fp32"  # the tiny model: too small for bf16 to pay
    assert loaded.dtype_reason.startswith("automatic")
    assert loaded.weights == tiny


def texts_200() -> list[str]:
    """200 varied texts: short and long, identifiers, numbers, other scripts."""
    corpus = builtin_corpus(200)
    texts = corpus[1:120]  # sentences of the generated corpus
    texts += [" ".join(corpus[i : i + 4]) for i in range(1, 41)]  # paragraphs
    texts += list(dict.fromkeys(corpus[0].split()))[:20]  # identifiers (ERR_..., SKU-..., 0x...)
    texts += [
        "Grüße aus München: Größe ändern",
        "数据库索引的维护",
        "индекс базы данных",
        "12345 67890",
        "?!",
        "a",
        "vacuum",
        "VACUUM FULL pg_class;",
        "select * from documents where id = 42",
        "la réplication logique et les slots",
        "ERR_CONN_REFUSED at 10.0.0.1:5432",
        "how do I create an index without blocking writes on a busy table",
        "checkpoint_timeout = 5min, max_wal_size = 1GB",
        "the quick brown fox jumps over the lazy dog " * 8,
        "café naïve résumé coöperate",
        "   spaces   around   ",
        "tab\tseparated\tvalues",
        "line one\nline two",
        "emoji 🚀 rocket",
        "x" * 300,
        "UPPER CASE QUERY ABOUT REPLICATION",
    ]
    return texts[:200]


def lexical_top10_overlap(mine: dict, reference: dict) -> float:
    top = sorted(reference, key=lambda t: -reference[t])[:10]
    if not top:
        return 1.0
    ours = set(sorted(mine, key=lambda t: -mine[t])[:10])
    return len(ours & set(top)) / len(top)


@pytest.mark.parametrize(("dtype", "pack"), [("bf16", False), ("bf16", True)])
def test_every_format_auto_can_choose_agrees_with_fp32(tiny, tmp_path, dtype, pack):
    """The bounds of issue 15 on 200 texts: dense cosine >= 0.999 for every text, and
    lexical-weight top-10 overlap >= 0.98 (mean) against fp32; also with the weights
    packed for oneDNN (pack_weights)."""
    texts = texts_200()
    assert len(texts) == 200 and len(set(texts)) == 200
    reference = encoding.encode(FakeSettings(tiny), encoders.get(FakeSettings(tiny)), texts)
    copy = numerics.prepare(tiny, dtype, "cpu")  # the converted copy, as setup writes it
    assert copy.dtype == dtype
    settings = FakeSettings(tiny, dtype=dtype, batch_size=16, pack_weights=pack)
    loaded = encoders.get(settings)
    assert loaded.dtype == dtype
    assert ("packed for oneDNN" in loaded.dtype_reason) == pack
    ours = encoding.encode(settings, loaded, texts)
    cosines = [
        float(np.dot(o.dense, r.dense) / np.linalg.norm(o.dense) / np.linalg.norm(r.dense))
        for o, r in zip(ours, reference, strict=True)
    ]
    overlaps = [
        lexical_top10_overlap(o.lexical_weights, r.lexical_weights)
        for o, r in zip(ours, reference, strict=True)
    ]
    assert min(cosines) >= 0.999, sorted(cosines)[:5]
    assert float(np.mean(overlaps)) >= 0.98, sorted(overlaps)[:5]


def test_packed_weights_compute_what_the_bf16_layers_did(tiny):
    """pack_weights changes the layout oneDNN reads, not the numbers: the same bf16
    products, summed in another order (queries one by one, and a padded batch)."""
    numerics.prepare(tiny, "bf16", "cpu")
    texts = texts_200()[:40]
    plain = FakeSettings(tiny, dtype="bf16", batch_size=8)
    reference = encoding.encode(plain, encoders.get(plain), texts)
    packed = FakeSettings(tiny, dtype="bf16", batch_size=8, pack_weights=True)
    loaded = encoders.get(packed)
    layers = [m for m in loaded.flag_model.model.modules() if isinstance(m, packing.PackedLinear)]
    # the tiny model's 2 layers (query, key, value and 3 dense each) and the pooler
    assert len(layers) == 2 * 6 + 1
    batched = encoding.encode(packed, loaded, texts)
    single = [encoding.encode_query(packed, loaded, text) for text in texts[:5]]
    for ours, theirs in zip(batched + single, reference + reference[:5], strict=True):
        assert np.allclose(ours.dense, theirs.dense, atol=2e-2)
        assert ours.lexical_weights.keys() == theirs.lexical_weights.keys()


def test_pack_weights_leaves_fp32_alone_and_says_so(tiny):
    loaded = encoders.get(FakeSettings(tiny, dtype="fp32", pack_weights=True))
    assert "only bf16 weights" in loaded.dtype_reason
    assert not any(isinstance(m, packing.PackedLinear) for m in loaded.flag_model.model.modules())


def test_a_failed_packing_leaves_every_layer_as_it_was_and_says_why(tiny, monkeypatch):
    numerics.prepare(tiny, "bf16", "cpu")
    reference = encoding.encode_query(
        FakeSettings(tiny, dtype="bf16"), encoders.get(FakeSettings(tiny, dtype="bf16")), "vacuum"
    )
    created = []

    def refuse_the_third(linear):
        if len(created) == 2:  # two layers packed already, then the operator fails
            raise RuntimeError("mkldnn: unsupported weight\nsecond line")
        created.append(linear)
        return real(linear)

    real = packing.PackedLinear
    monkeypatch.setattr(packing, "PackedLinear", refuse_the_third)
    settings = FakeSettings(tiny, dtype="bf16", pack_weights=True)
    loaded = encoders.get(settings)
    assert loaded.dtype_reason.endswith(
        "; pack_weights: packing failed (mkldnn: unsupported weight), weights left unpacked"
    )
    assert not any(isinstance(m, real) for m in loaded.flag_model.model.modules())
    assert np.allclose(encoding.encode_query(settings, loaded, "vacuum").dense, reference.dense)
