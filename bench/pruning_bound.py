"""How many of a sparse query's postings exact dynamic pruning could skip, at best.

The sparse leg adds every posting of every query term (sparse_scan.c, rank_all).
Before building block-max pruning into it, this asks the benchmark's corpus
(bench/corpus.py, same generator, its own seed) how much an idealised
term-at-a-time MaxScore would save: the lists in order of their bound, the
first i read whole, then for each later list only its 128-posting blocks
(SPARSE_BLOCK_POSTINGS) that hold a candidate, a row whose partial score plus
the bounds of the lists not read yet reaches the batch's threshold (the
batch-th best partial score), threshold and candidates recomputed after each
list. The best i is chosen per query with hindsight, and checking blocks costs
nothing, so a real scan reads more. Prints the share of postings read.

    .venv/bin/python bench/pruning_bound.py --docs 100000 --batch 100
"""

import argparse

import numpy as np
from corpus import VOCAB, sparse_vector

BLOCK = 128


def postings(docs):
    """(row ids, weights, start of each token's list) with every list in row order."""
    ids = np.concatenate([np.full(t.size, i) for i, (t, _) in enumerate(docs)])
    tokens = np.concatenate([t for t, _ in docs])
    weights = np.concatenate([w for _, w in docs])
    order = np.lexsort((ids, tokens))
    return ids[order], weights[order], np.searchsorted(tokens[order], np.arange(VOCAB + 1))


def share_read(lists, n, batch, essential):
    """Share of the lists' postings read when the first `essential` are read whole."""
    bounds = np.array([x.max() for _, x in lists])
    left = np.concatenate([np.cumsum(bounds[::-1])[::-1], [0]])
    sums = np.zeros(n)
    read = 0
    for j, (rows, scores) in enumerate(lists):
        if j >= essential:
            threshold = np.partition(sums, n - batch)[n - batch]
            candidates = np.flatnonzero(sums + left[j] >= threshold)
            starts = np.arange(0, rows.size, BLOCK)
            ends = np.minimum(starts + BLOCK, rows.size)
            held = np.searchsorted(candidates, rows[ends - 1], side="right") > np.searchsorted(
                candidates, rows[starts]
            )
            read += int((ends - starts)[held].sum())
            hit = np.isin(rows, candidates)
            sums[rows[hit]] += scores[hit]
        else:
            read += rows.size
            sums[rows] += scores
    return read / sum(rows.size for rows, _ in lists)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100, help="rows the first batch ranks")
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    docs = [sparse_vector(rng, rng.integers(60, 201)) for _ in range(args.docs)]
    queries = [sparse_vector(rng, rng.integers(5, 16)) for _ in range(args.queries)]
    ids, weights, starts = postings(docs)
    best, whole = [], []
    for tokens, query_weights in queries:
        lists = [
            (ids[starts[t] : starts[t + 1]], weights[starts[t] : starts[t + 1]] * w)
            for t, w in zip(tokens, query_weights, strict=True)
            if starts[t + 1] > starts[t]
        ]
        lists.sort(key=lambda rows_scores: -rows_scores[1].max())
        shares = [share_read(lists, args.docs, args.batch, i) for i in range(len(lists) + 1)]
        best.append(min(shares))
        whole.append(sum(rows.size for rows, _ in lists))
    best = np.array(best)
    print("| docs | batch | queries | postings per query | share read: mean | median | p90 |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.docs} | {args.batch} | {args.queries} | {np.mean(whole):.0f} | {best.mean():.2f}"
        f" | {np.median(best):.2f} | {np.quantile(best, 0.9):.2f} |"
    )


if __name__ == "__main__":
    main()
