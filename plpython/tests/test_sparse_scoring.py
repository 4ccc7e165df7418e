"""sparse_index.search against brute force, outside the database."""

import struct

import numpy as np
import pytest
from hybrid_search.legacy import sparse_index


def send(tokens: dict[int, float], dim: int = 1000) -> bytes:
    """pgvector's sparsevec_send format."""
    ids = sorted(tokens)
    return (
        struct.pack(">iii", dim, len(ids), 0)
        + struct.pack(f">{len(ids)}i", *ids)
        + struct.pack(f">{len(ids)}f", *(tokens[i] for i in ids))
    )


def random_corpus(rng, docs=400, vocab=60):
    corpus = {}
    for doc_id in range(1, docs + 1):
        n = rng.integers(3, 12)
        tokens = rng.zipf(1.3, size=n) % vocab
        corpus[doc_id] = {int(t): float(np.float32(rng.uniform(0.01, 1.0))) for t in tokens}
    return corpus


def memory_index(corpus, changed=(), hidden=(), filter_ids=None, block_size=8):
    """An Index over dicts: changed documents are scored 'exactly', hidden ones are invisible."""
    indexed = {d: v for d, v in corpus.items()}
    postings = sparse_index.Postings.from_vectors((d, send(v)) for d, v in indexed.items())
    width, blocks = sparse_index.build_blocks(postings, block_size)
    live = {d: v for d, v in corpus.items() if d not in hidden}
    if filter_ids is not None:
        live = {d: v for d, v in live.items() if d in filter_ids}
    fresh_docs = {}

    def score_changed(query):
        out = []
        for d in changed:
            if d in live and d in fresh_docs:
                s = sum(w * query.get(t, 0.0) for t, w in fresh_docs[d].items())
                if s > 0:
                    out.append((d, s))
        return out

    index = sparse_index.Index(
        doc_id_bytes=width,
        max_doc_id=max(corpus),
        block_maxima=lambda tokens: [
            (b.token_id, b.block, b.max_weight) for b in blocks if b.token_id in tokens
        ],
        read_blocks=lambda requests: [
            (b.token_id, b.doc_ids, b.weights)
            for b in blocks
            if (b.token_id, b.block) in set(requests)
        ],
        changed_ids=lambda: np.array(sorted(changed), dtype=np.int64),
        score_changed=None,
        fetch_vectors=lambda ids: [(d, send(live[d])) for d in ids if d in live],
        visible_ids=lambda ids: {d for d in ids if d in live},
    )
    return index, fresh_docs, score_changed


def brute_force(docs, query, k):
    scored = [
        (d, sum(float(np.float32(w)) * query.get(t, 0.0) for t, w in v.items()))
        for d, v in docs.items()
    ]
    scored = [(d, s) for d, s in scored if s > 0]
    scored.sort(key=lambda t: (-t[1], t[0]))
    return scored[:k]


def check(found, expected):
    assert [d for d, _ in found] == [d for d, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-5)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 5, 30])
def test_pruned_search_is_exact(seed, k):
    rng = np.random.default_rng(seed)
    corpus = random_corpus(rng)
    index, _, _ = memory_index(corpus)
    index.score_changed = lambda: []
    for _ in range(5):
        query = {int(t): float(rng.uniform(0.1, 1.0)) for t in rng.zipf(1.3, size=4) % 60}
        check(sparse_index.search(index, query, k, filtered=False), brute_force(corpus, query, k))


@pytest.mark.parametrize("seed", range(6))
def test_changed_hidden_and_filtered_documents(seed):
    rng = np.random.default_rng(100 + seed)
    corpus = random_corpus(rng)
    changed = set(rng.choice(list(corpus), 40, replace=False).tolist())
    hidden = set(rng.choice(list(corpus), 60, replace=False).tolist())
    filter_ids = set(rng.choice(list(corpus), 120, replace=False).tolist())
    # the changed documents now hold other vectors; a third of them were deleted
    current = dict(corpus)
    deleted = set(list(changed)[: len(changed) // 3])
    for d in changed:
        if d in deleted:
            del current[d]
        else:
            current[d] = {int(t): 0.5 for t in rng.integers(0, 60, size=5)}
    for filtered in (False, True):
        index, fresh, score_changed = memory_index(
            corpus, changed, hidden | deleted, filter_ids if filtered else None
        )
        fresh.update({d: v for d, v in current.items() if d in changed})
        visible = {
            d: v for d, v in current.items()
            if d not in hidden and (not filtered or d in filter_ids)
        }  # fmt: skip
        for _ in range(5):
            query = {int(t): float(rng.uniform(0.1, 1.0)) for t in rng.zipf(1.3, size=4) % 60}
            index.score_changed = lambda q=query, score=score_changed: score(q)
            found = sparse_index.search(index, query, 10, filtered=filtered)
            check(found, brute_force(visible, query, 10))


def test_blocks_are_impact_ordered():
    corpus = {d: {7: float(d) / 100} for d in range(1, 21)}
    postings = sparse_index.Postings.from_vectors((d, send(v)) for d, v in corpus.items())
    width, blocks = sparse_index.build_blocks(postings, block_size=8)
    assert width == 4
    assert [b.block for b in blocks] == [0, 1, 2]
    assert [len(b.doc_ids) // 4 for b in blocks] == [8, 8, 4]
    maxima = [b.max_weight for b in blocks]
    assert maxima == sorted(maxima, reverse=True)
    assert np.frombuffer(blocks[0].doc_ids, "<i4")[0] == 20


def test_large_ids_use_eight_bytes():
    postings = sparse_index.Postings.from_vectors([(2**40, send({1: 0.5}))])
    width, (block,) = sparse_index.build_blocks(postings)
    assert width == 8
    assert np.frombuffer(block.doc_ids, "<i8")[0] == 2**40


def test_empty_query_finds_nothing():
    index, _, _ = memory_index({1: {1: 1.0}})
    assert sparse_index.search(index, {}, 10, filtered=False) == []


def test_pruning_stops_reading_early():
    # token 1 is in every document with falling weight; token 2 is rare and heavy
    corpus = {d: {1: 1.0 / d} for d in range(1, 401)}
    corpus[7][2] = 5.0
    index, _, _ = memory_index(corpus)
    index.score_changed = lambda: []
    requested = []
    read = index.read_blocks
    index.read_blocks = lambda requests: requested.extend(requests) or read(requests)
    query = {1: 1.0, 2: 1.0}
    check(sparse_index.search(index, query, 3, filtered=False), brute_force(corpus, query, 3))
    blocks_of_token_1 = -(-400 // 8)
    assert len([r for r in requested if r[0] == 1]) < blocks_of_token_1 // 4


@pytest.mark.parametrize("seed", range(3))
def test_queries_with_more_tokens_than_the_masks_track(seed):
    # over MASK_TOKENS query tokens: the untracked ones bound every document
    rng = np.random.default_rng(200 + seed)
    vocab = sparse_index.MASK_TOKENS + 40
    corpus = random_corpus(rng, docs=300, vocab=vocab)
    index, _, _ = memory_index(corpus)
    index.score_changed = lambda: []
    query = {t: float(rng.uniform(0.1, 1.0)) for t in range(vocab)}
    check(sparse_index.search(index, query, 10, filtered=False), brute_force(corpus, query, 10))


def test_only_documents_that_can_still_reach_the_top_are_rescored():
    # after token 1's one block, token 2 (weight 0.001 everywhere) can lift a
    # document by 0.001 at most: only documents 1-3 can still be in the top 3
    corpus = {d: {1: 1.0 / d, 2: 0.001} for d in range(1, 9)}
    corpus.update({d: {2: 0.001} for d in range(9, 200)})
    index, _, _ = memory_index(corpus)
    index.score_changed = lambda: []
    fetched = []
    fetch = index.fetch_vectors
    index.fetch_vectors = lambda ids: fetched.extend(ids) or fetch(ids)
    query = {1: 1.0, 2: 1.0}
    check(sparse_index.search(index, query, 3, filtered=False), brute_force(corpus, query, 3))
    assert sorted(fetched) == [1, 2, 3]
