"""keyword_index: BM25 formulas and the inverted-index search, outside the database."""

import math

import numpy as np
import pytest
from hybrid_search.legacy import keyword_index, sparse_index


def test_idf_matches_lucene_and_is_never_negative():
    assert keyword_index.idf(10, 2) == pytest.approx(math.log(1 + 8.5 / 2.5))
    assert keyword_index.idf(10, 10) > 0
    assert keyword_index.idf(10, 0) > keyword_index.idf(10, 1)


def test_tf_part_by_hand():
    stats = keyword_index.Statistics(documents=3, avg_length=10.0, k1=1.2, b=0.75)
    # average length: tf * (k1 + 1) / (tf + k1)
    assert keyword_index.tf_part(np.array([2.0]), np.array([10.0]), stats)[0] == pytest.approx(
        2 * 2.2 / 3.2
    )
    # twice the average length: k1 * (1 - b + 2b) = 1.2 * 1.75
    assert keyword_index.tf_part(np.array([1.0]), np.array([20.0]), stats)[0] == pytest.approx(
        2.2 / (1 + 2.1)
    )


def brute_force(docs, query, k1, b):
    n = len(docs)
    avgdl = sum(sum(t.values()) for t in docs.values()) / n
    out = {}
    for doc_id, tfs in docs.items():
        dl = sum(tfs.values())
        s = 0.0
        for lexeme, qtf in query.items():
            if lexeme in tfs:
                df = sum(1 for t in docs.values() if lexeme in t)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                tf = tfs[lexeme]
                s += qtf * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        if s > 0:
            out[doc_id] = s
    return sorted(out.items(), key=lambda t: (-t[1], t[0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_index_search_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(40)]
    docs = {}
    for doc_id in range(1, 301):
        words = rng.zipf(1.4, size=int(rng.integers(1, 30))) % len(vocab)
        tfs: dict[str, int] = {}
        for w in words:
            tfs[vocab[w]] = tfs.get(vocab[w], 0) + 1
        docs[doc_id] = tfs
    built = keyword_index.build(
        ((d, list(t), list(t.values())) for d, t in docs.items()), k1=1.2, b=0.75, block_size=16
    )
    token = {x: i for i, x in enumerate(built.lexemes)}
    assert built.documents == 300
    assert built.document_frequency[token["w1"]] == sum(1 for t in docs.values() if "w1" in t)
    stats = keyword_index.Statistics(built.documents, built.avg_length, 1.2, 0.75)
    by_block = {(x.token_id, x.block): x for x in built.blocks}

    def vector(doc_id):
        tfs = docs[doc_id]
        parts = keyword_index.tf_part(
            np.array(list(tfs.values()), float), np.full(len(tfs), sum(tfs.values())), stats
        )
        return keyword_index.encode_vector([token[x] for x in tfs], parts.tolist())

    index = sparse_index.Index(
        doc_id_bytes=built.doc_id_bytes,
        max_doc_id=built.max_doc_id,
        block_maxima=lambda ts: [(t, b, x.max_weight) for (t, b), x in by_block.items() if t in ts],
        read_blocks=lambda reqs: [
            (t, by_block[(t, b)].doc_ids, by_block[(t, b)].weights) for t, b in reqs
        ],
        changed_ids=lambda: np.empty(0, np.int64),
        score_changed=list,
        fetch_vectors=lambda ids: [(d, vector(d)) for d in ids],
        visible_ids=set,
    )
    for query in [{"w1": 1, "w7": 1}, {"w0": 2, "w30": 1}, {"w3": 1}]:
        dfs = {x: int(built.document_frequency[token[x]]) for x in query if x in token}
        weights = keyword_index.query_weights(query, dfs, built.documents)
        got = sparse_index.search(index, {token[x]: w for x, w in weights.items()}, 10, False)
        expected = brute_force(docs, query, 1.2, 0.75)[:10]
        assert [d for d, _ in got] == [d for d, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-5)
