"""In-database embeddings are exactly what FlagEmbedding gives outside it."""

import numpy as np
import psycopg
import pytest
from helpers import parse_sparse

TEXTS = [
    "ERR_CONN_REFUSED when the connection pooler restarts",
    "How do I create an index without blocking writes?",
    "sparse lexical weights and dense vectors",
]


def reference(model, texts, max_length=512):
    return model.encode(
        texts, batch_size=len(texts), max_length=max_length, return_dense=True, return_sparse=True
    )


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("text", TEXTS)
def test_dense_matches_flagembedding(db, reference_model, text):
    ours = db.execute("select embed_dense(%s)", [text]).fetchone()[0].to_numpy()
    theirs = reference(reference_model, [text])["dense_vecs"][0]
    assert ours.shape == theirs.shape == (32,)
    assert cosine(ours, theirs) > 0.9999


@pytest.mark.parametrize("text", TEXTS)
def test_sparse_matches_flagembedding(db, reference_model, text):
    ours = parse_sparse(db.execute("select embed_sparse(%s)::text", [text]).fetchone()[0])
    theirs = reference(reference_model, [text])["lexical_weights"][0]
    assert ours, "the test model must produce some lexical weights"
    assert sorted(ours) == sorted(int(t) for t in theirs)
    for token, weight in theirs.items():
        assert ours[int(token)] == pytest.approx(float(weight), rel=1e-5)


def test_embed_returns_both_from_one_call_and_repeats_hit_the_query_cache(db):
    from helpers import model_calls

    text = "a text embedded for the first time in this backend"
    before = model_calls(db)
    dense, sparse = db.execute("select dense, sparse::text from embed(%s)", [text]).fetchone()
    assert model_calls(db) == before + 1
    hits = db.execute("select query_cache_hits from hybrid_search_model_stats()").fetchone()[0]
    alone = db.execute("select embed_dense(%s)", [text]).fetchone()[0]
    assert cosine(dense.to_numpy(), alone.to_numpy()) > 0.9999
    assert sparse == db.execute("select embed_sparse(%s)::text", [text]).fetchone()[0]
    assert model_calls(db) == before + 1
    after = db.execute("select query_cache_hits from hybrid_search_model_stats()").fetchone()[0]
    assert after == hits + 2


def test_embed_batch_keeps_order_and_nulls(db, reference_model):
    texts = [TEXTS[0], None, TEXTS[1], TEXTS[2]]
    rows = db.execute("select ord, dense, sparse from embed_batch(%s)", [texts]).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[1][1] is None and rows[1][2] is None
    expected = reference(reference_model, [TEXTS[0], TEXTS[1], TEXTS[2]])["dense_vecs"]
    for (_, dense, _), theirs in zip([rows[0], rows[2], rows[3]], expected, strict=True):
        assert cosine(dense.to_numpy(), theirs) > 0.9999


def test_null_text_embeds_to_null(db):
    assert db.execute("select embed_dense(null), embed_sparse(null)").fetchone() == (None, None)


def test_text_longer_than_max_length_is_truncated(db, reference_model):
    long_text = " ".join(["replication lag on the standby"] * 400)  # far beyond 64 tokens
    db.execute("select hybrid_search_configure(max_length => 64)")
    ours = db.execute("select embed_dense(%s)", [long_text]).fetchone()[0].to_numpy()
    truncated = reference(reference_model, [long_text], max_length=64)["dense_vecs"][0]
    assert cosine(ours, truncated) > 0.9999


def test_sparse_dot_equals_lexical_matching_score(db, reference_model):
    out = reference(reference_model, TEXTS[:2])
    expected = reference_model.compute_lexical_matching_score(*out["lexical_weights"])
    ours = db.execute(
        "select sparse_dot(embed_sparse(%s), embed_sparse(%s))", TEXTS[:2]
    ).fetchone()[0]
    assert ours == pytest.approx(expected, rel=1e-5)
    self_score = reference_model.compute_lexical_matching_score(
        out["lexical_weights"][0], out["lexical_weights"][0]
    )
    ours_json = db.execute(
        "select sparse_dot(sparse_to_jsonb(embed_sparse(%s)), sparse_to_jsonb(embed_sparse(%s)))",
        [TEXTS[0], TEXTS[0]],
    ).fetchone()[0]
    assert ours_json == pytest.approx(self_score, rel=1e-5)


def test_sparse_dot_jsonb(db):
    value = db.execute(
        """select sparse_dot('{"1": 0.5, "7": 2}'::jsonb, '{"7": 0.25, "9": 4}'::jsonb)"""
    ).fetchone()[0]
    assert value == pytest.approx(0.5)
    assert db.execute("select sparse_dot('{}'::jsonb, '{\"1\": 1}'::jsonb)").fetchone()[0] == 0


@pytest.mark.parametrize(
    "a, b, message",
    [
        ("[1, 2]", "{}", "expected two JSON objects"),
        ('{"1": "heavy"}', '{"1": 1}', 'weight of token "1" is not a number'),
        ('{"1": 1}', "3", "expected two JSON objects"),
        ('{"1": {"nested": 1}}', '{"1": 1}', "is not a number"),
    ],
)
def test_sparse_dot_rejects_malformed_jsonb(db, a, b, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        db.execute("select sparse_dot(%s::jsonb, %s::jsonb)", [a, b])


def test_sparse_dot_rejects_different_vocabularies(db):
    with pytest.raises(psycopg.errors.DataException, match="different sparsevec dimensions"):
        db.execute("select sparse_dot('{1:1}/10'::sparsevec, '{1:1}/20'::sparsevec)")
