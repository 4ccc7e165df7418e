"""BM25 on CISI: is the in-database keyword leg faithful, and which BM25 choices
move nDCG@10?

1. Faithfulness: loads a BEIR collection into a throwaway cluster (no model is
   loaded: rows are queued, never embedded; the keyword leg sees them at once),
   builds the keyword index, and compares keyword_search (the index) and
   keyword_search_scan with a brute-force BM25 written here from the formula,
   over the lexemes PostgreSQL produced (documents.fts), for every query and
   every scored document.
2. Variants: the same brute force with one choice changed at a time (idf
   formula, document length, query term repetition, k1/b, and a plain-Python
   tokenizer with stop words and a Porter/Snowball stemmer as reference
   implementations use), and BEIR's evaluation convention of dropping a
   document whose id equals the query's id. Prints nDCG@k per variant.

    .venv/bin/python bench/bm25_variants.py /work/shared/eval/cisi [--save FILE] [--lock FILE]
"""

import argparse
import fcntl
import itertools
import math
import re
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import psycopg
from common import scratch_database
from hybrid_search_installer import evaluate
from hybrid_search_installer.layout import Layout

PG_STOPWORDS = Path("/usr/share/postgresql/15/tsearch_data/english.stop")
# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (Anserini's default analyzer uses it)
LUCENE_STOPWORDS = {
    *("a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is"),
    *("it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there"),
    *("these", "they", "this", "to", "was", "will", "with"),
}


def lucene_length(length: int) -> int:
    """A document length as Lucene's BM25 sees it: stored in one byte
    (SmallFloat.intToByte4), exact below 24, then 4 significant bits."""

    def long_to_int4(i: int) -> int:
        bits = i.bit_length()
        if bits < 4:
            return i
        shift = bits - 4
        return ((i >> shift) & 0x07) | ((shift + 1) << 3)

    def int4_to_long(i: int) -> int:
        bits, shift = i & 0x07, (i >> 3) - 1
        return bits if shift == -1 else (bits | 0x08) << shift

    free = 255 - long_to_int4(2**31 - 1)
    if length < free:
        return length
    return free + int4_to_long(long_to_int4(length - free))


# ---------------------------------------------------------------- BM25, brute force


def idf_lucene(n_docs: int, df: int) -> float:
    return math.log(1 + (n_docs - df + 0.5) / (df + 0.5))


def idf_robertson(n_docs: int, df: int) -> float:
    """Robertson-Sparck Jones: negative for terms in more than half the documents."""
    return math.log((n_docs - df + 0.5) / (df + 0.5))


def idf_robertson_floor(n_docs: int, df: int) -> float:
    return max(0.0, idf_robertson(n_docs, df))


def bm25_run(
    docs: dict[int, Counter],
    lengths: dict[int, float],
    queries: dict[str, Counter],
    k1: float = 1.2,
    b: float = 0.75,
    idf=idf_lucene,
    repeat_query_terms: bool = True,
    depth: int | None = None,
) -> dict[str, list[tuple[int, float]]]:
    """{query id: [(doc id, score)] best first (ties by id)} over every matching document."""
    n_docs = len(docs)
    avg = sum(lengths.values()) / n_docs
    df: Counter = Counter()
    postings: dict[str, list[tuple[int, int]]] = {}
    for doc_id, terms in docs.items():
        for term, tf in terms.items():
            df[term] += 1
            postings.setdefault(term, []).append((doc_id, tf))
    run = {}
    for qid, terms in queries.items():
        scores: dict[int, float] = {}
        for term, count in terms.items():
            if term not in postings:
                continue
            weight = idf(n_docs, df[term]) * (count if repeat_query_terms else 1)
            for doc_id, tf in postings[term]:
                norm = 1 - b + b * lengths[doc_id] / avg
                scores[doc_id] = scores.get(doc_id, 0.0) + weight * tf * (k1 + 1) / (tf + k1 * norm)
        ranked = sorted(scores.items(), key=lambda t: (-t[1], t[0]))
        run[qid] = ranked[:depth] if depth else ranked
    return run


def ndcg(run, qrels: dict[str, dict[int, int]], k: int, skip_identical: bool = False) -> float:
    """Mean nDCG@k (linear gains, as hybrid_search_evaluate and trec_eval) over judged queries;
    skip_identical drops a document whose id is the query's (BEIR's default)."""
    total = 0.0
    for qid, judged in qrels.items():
        ranked = [d for d, _ in run.get(qid, []) if not (skip_identical and str(d) == qid)][:k]
        dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sorted(judged.values(), reverse=True)[:k]
        total += dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return total / len(qrels)


# ---------------------------------------------------------------- plain-Python tokenizers


def tokenizer(stemmer: str | None, stopwords: set[str]):
    """lowercase \\w+ tokens (letters and digits), stop words dropped, then stemmed."""
    stem = None
    if stemmer:
        import snowballstemmer

        stem = snowballstemmer.stemmer(stemmer).stemWord

    def tokens(text: str) -> list[str]:
        words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in stopwords]
        return [stem(w) for w in words] if stem else words

    return tokens


# ---------------------------------------------------------------- the database side


def pg_lexemes(conn):
    """({doc id: Counter(lexeme: positions)}, {doc id: all positions}, max position per doc)."""
    docs: dict[int, Counter] = {}
    for doc_id, lexeme, tf in conn.execute(
        "select d.id, u.lexeme, coalesce(cardinality(u.positions), 1)"
        " from documents as d, unnest(d.fts) as u"
    ):
        docs.setdefault(doc_id, Counter())[lexeme] = tf
    for (doc_id,) in conn.execute("select id from documents"):
        docs.setdefault(doc_id, Counter())
    return docs


def pg_query_lexemes(conn, queries) -> dict[str, Counter]:
    out = {}
    for qid, text in queries:
        out[qid] = Counter(
            dict(
                conn.execute(
                    "select lexeme, coalesce(cardinality(positions), 1)"
                    " from unnest(to_tsvector('english', %s))",
                    [text],
                ).fetchall()
            )
        )
    return out


def database_runs(conn, queries, depth: int, names=("keyword_search", "keyword_search_scan")):
    """keyword_search (index) and keyword_search_scan runs, best first."""
    runs = {}
    for name in names:
        runs[name] = {
            qid: [
                (d, s)
                for d, s in conn.execute(
                    f"select id, score from {name}(%s, %s) order by rank", [text, depth]
                ).fetchall()
            ]
            for qid, text in queries
        }
    return runs


def compare(db_run, brute, k: int) -> tuple[int, float, int, int, int]:
    """(documents compared, largest relative score difference, queries whose whole ranking
    differs, of which differ beyond ties within 1e-6, queries whose top k differs)."""
    compared, worst, order, beyond, top = 0, 0.0, 0, 0, 0
    for qid, ranked in brute.items():
        got = db_run[qid]
        if {d for d, _ in got} != {d for d, _ in ranked}:
            raise SystemExit(f"query {qid}: the database scored other documents")
        mine = dict(ranked)
        if [d for d, _ in got] != [d for d, _ in ranked]:
            order += 1
            # every swapped pair must be a near-tie of the brute-force scores
            beyond += any(
                mine[a] < mine[b] - 1e-6 * max(1.0, abs(mine[a]))
                for (a, _), (b, _) in itertools.pairwise(got)
            )
        top += [d for d, _ in got[:k]] != [d for d, _ in ranked[:k]]
        for d, s in got:
            worst = max(worst, abs(s - mine[d]) / max(1.0, abs(mine[d])))
            compared += 1
    return compared, worst, order, beyond, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--save", type=Path)
    parser.add_argument("--lock", help="flock this file while installing and creating")
    args = parser.parse_args()
    corpus, queries, qrels_rows = evaluate.read_collection(args.collection)
    numbers = evaluate.doc_numbers(corpus)
    qrels: dict[str, dict[int, int]] = {}
    for q, d, r in qrels_rows:
        if r > 0 and d in numbers:
            qrels.setdefault(q, {})[numbers[d]] = r
    queries = [(q, t) for q, t in queries if q in qrels]
    depth = len(corpus)
    layout = Layout.from_environment()
    with ExitStack() as stack:
        lock = stack.enter_context(open(args.lock, "a")) if args.lock else None
        if lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        dsn = stack.enter_context(scratch_database(layout, None))
        if lock:
            fcntl.flock(lock, fcntl.LOCK_UN)
        conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        conn.execute("select hybrid_search_configure(embed_mode => 'queued')")
        evaluate.load(conn, corpus, queries, qrels_rows)
        conn.execute("select hybrid_search_refresh()")
        docs = pg_lexemes(conn)
        query_terms = pg_query_lexemes(conn, queries)
        db_runs = database_runs(conn, queries, depth)
        # Anserini's parameters, set the way a DBA would (the keyword index is rebuilt)
        conn.execute("select hybrid_search_configure(bm25_k1 => 0.9, bm25_b => 0.4)")
        anserini_db = database_runs(conn, queries, depth, names=("keyword_search",))
        positions = dict(
            conn.execute(
                "select d.id, coalesce(max(p), 0) from documents as d"
                " left join lateral unnest(d.fts) as u on true"
                " left join lateral unnest(u.positions) as p on true group by d.id"
            ).fetchall()
        )

    lengths = {d: float(sum(t.values())) for d, t in docs.items()}
    ours = bm25_run(docs, lengths, query_terms)
    lines = [
        f"`.venv/bin/python bench/bm25_variants.py {args.collection}`",
        "",
        f"{len(corpus)} documents, {len(queries)} judged queries; BM25 k1 1.2, b 0.75 unless"
        " stated.",
        "",
        "**Faithfulness**: the in-database keyword leg against a brute-force BM25 (this"
        " script) over the same lexemes (`documents.fts`), every scored document of every query:",
        "",
        "| in-database | documents compared | largest relative score difference |"
        " queries ordered differently (beyond 1e-6 ties) | top 10 differs |"
        f" nDCG@{args.k} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, run in db_runs.items():
        compared, worst, order, beyond, top = compare(run, ours, args.k)
        lines.append(
            f"| `{name}` | {compared} | {worst:.1e} | {order} ({beyond}) | {top} |"
            f" {ndcg(run, qrels, args.k):.3f} |"
        )
    lines.append(f"| brute force (this script) | | | | | {ndcg(ours, qrels, args.k):.3f} |")
    anserini = bm25_run(docs, lengths, query_terms, 0.9, 0.4)
    compared, worst, order, beyond, top = compare(anserini_db["keyword_search"], anserini, args.k)
    lines.append(
        "| `keyword_search` after `hybrid_search_configure(bm25_k1 => 0.9, bm25_b => 0.4)`,"
        f" against the brute force with those | {compared} | {worst:.1e} | {order} ({beyond}) |"
        f" {top} | {ndcg(anserini_db['keyword_search'], qrels, args.k):.3f} |"
    )

    text_only = {
        numbers[d]: t for d, t in ((doc["_id"], doc.get("text", "")) for doc in _raw(args))
    }
    full_text = {numbers[d]: t for d, t in corpus}
    pg_stop = set(PG_STOPWORDS.read_text().split()) if PG_STOPWORDS.exists() else set()
    variants: list[tuple[str, dict]] = [
        ("ours: PostgreSQL `english` lexemes, Lucene idf, length = lexeme positions", ours),
        (
            "Robertson idf `ln((N-n+0.5)/(n+0.5))` (negative above N/2)",
            bm25_run(docs, lengths, query_terms, idf=idf_robertson),
        ),
        (
            "Robertson idf floored at 0",
            bm25_run(docs, lengths, query_terms, idf=idf_robertson_floor),
        ),
        (
            "length = all words incl. stop words (last position)",
            bm25_run(docs, {d: float(positions[d]) for d in docs}, query_terms),
        ),
        (
            "query terms counted once",
            bm25_run(docs, lengths, query_terms, repeat_query_terms=False),
        ),
        ("k1 0.9, b 0.4 (Anserini/Pyserini)", bm25_run(docs, lengths, query_terms, 0.9, 0.4)),
        ("k1 1.5, b 0.75 (rank_bm25)", bm25_run(docs, lengths, query_terms, 1.5, 0.75)),
    ]
    for label, stemmer, stop, texts in [
        ("Python tokens, PostgreSQL stop words, Porter", "porter", pg_stop, full_text),
        ("Python tokens, PostgreSQL stop words, Snowball English", "english", pg_stop, full_text),
        ("Python tokens, no stop words, Porter", "porter", set(), full_text),
        ("Python tokens, PostgreSQL stop words, no stemmer", None, pg_stop, full_text),
        (
            "Python tokens, PostgreSQL stop words, Porter, text without title",
            "porter",
            pg_stop,
            text_only,
        ),
    ]:
        tokens = tokenizer(stemmer, stop)
        tdocs = {d: Counter(tokens(t)) for d, t in texts.items()}
        tq = {q: Counter(tokens(t)) for q, t in queries}
        tl = {d: float(sum(c.values())) for d, c in tdocs.items()}
        variants.append((label, bm25_run(tdocs, tl, tq)))
        if stemmer == "porter" and stop is pg_stop and texts is full_text:
            variants.append((label + ", k1 0.9, b 0.4", bm25_run(tdocs, tl, tq, 0.9, 0.4)))
    # Anserini's BM25: Lucene's English stop words, Porter, k1 0.9, b 0.4, one-byte lengths
    tokens = tokenizer("porter", LUCENE_STOPWORDS)
    tdocs = {d: Counter(tokens(t)) for d, t in full_text.items()}
    tq = {q: Counter(tokens(t)) for q, t in queries}
    exact = {d: float(sum(c.values())) for d, c in tdocs.items()}
    lossy = {d: float(lucene_length(int(n))) for d, n in exact.items()}
    variants += [
        ("Python tokens, Lucene stop words, Porter", bm25_run(tdocs, exact, tq)),
        (
            "Python tokens, Lucene stop words, Porter, one-byte lengths (Lucene)",
            bm25_run(tdocs, lossy, tq),
        ),
        (
            "Python tokens, Lucene stop words, Porter, one-byte lengths, k1 0.9, b 0.4 (Anserini)",
            bm25_run(tdocs, lossy, tq, 0.9, 0.4),
        ),
    ]
    lines += [
        "",
        f"**Variants** (one choice changed from ours, brute force), nDCG@{args.k}:",
        "",
        f"| variant | nDCG@{args.k} | nDCG@{args.k}, BEIR's `ignore_identical_ids` |",
        "|---|---:|---:|",
    ]
    for label, run in variants:
        lines.append(
            f"| {label} | {ndcg(run, qrels, args.k):.3f} |"
            f" {ndcg(run, qrels, args.k, skip_identical=True):.3f} |"
        )
    report = "\n".join(lines)
    print(report)
    if args.save:
        args.save.write_text(report + "\n")


def _raw(args):
    import json

    with (args.collection / "corpus.jsonl").open() as f:
        return [json.loads(line) for line in f]


if __name__ == "__main__":
    main()
