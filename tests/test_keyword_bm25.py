"""The BM25 keyword leg against a BM25 computed here from documents.fts."""

import math

import psycopg
import pytest
from helpers import insert

TEXTS = [
    "CREATE INDEX CONCURRENTLY builds an index without blocking writes",
    "A B-tree index supports equality and range queries on an index key",
    "GIN indexes store posting lists for full-text search and jsonb",
    "ALTER TABLE takes a lock that blocks reads and writes, a lock held to commit",
    "VACUUM reclaims space held by dead tuples",
    "A streaming replica replays WAL and serves read-only queries",
    "unique_violation 23505 is raised for a duplicate key in a unique index",
    "Reciprocal rank fusion adds one over sixty plus rank from every list",
    "Row-level security policies restrict the rows a role can see",
    "Index scans read the index, then the table; an index-only scan skips the table",
    "To be or not to be",  # stop words only: no lexeme, length 0, still a document
]


def terms(conn) -> dict[int, dict[str, int]]:
    """{doc id: {lexeme: positions}} as stored in documents.fts."""
    out: dict[int, dict[str, int]] = {}
    for doc_id, lexeme, tf in conn.execute(
        "select d.id, u.lexeme, coalesce(cardinality(u.positions), 1)"
        " from documents d, unnest(d.fts) u"
    ):
        out.setdefault(doc_id, {})[lexeme] = tf
    for (doc_id,) in conn.execute("select id from documents"):
        out.setdefault(doc_id, {})
    return out


def bm25(conn, query, k1=1.2, b=0.75, stats_from=None):
    """Okapi BM25 (Lucene idf) of every document; statistics from stats_from or the corpus."""
    docs = terms(conn)
    basis = stats_from or docs
    n = len(basis)
    avgdl = sum(sum(t.values()) for t in basis.values()) / n
    q = {}
    for lexeme, count in conn.execute(
        "select lexeme, cardinality(positions) from unnest(to_tsvector('english', %s))", [query]
    ):
        q[lexeme] = count
    scores = {}
    for doc_id, tfs in docs.items():
        dl = sum(tfs.values())
        s = 0.0
        for lexeme, qtf in q.items():
            if lexeme in tfs:
                df = sum(1 for t in basis.values() if lexeme in t)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                tf = tfs[lexeme]
                s += qtf * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        if s > 0:
            scores[doc_id] = s
    return sorted(scores.items(), key=lambda t: (-t[1], t[0]))


def search(conn, query, k=10, fn="keyword_search", **kwargs):
    args = "".join(f", {name} => %({name})s" for name in kwargs)
    return [
        (i, s)
        for i, _, s in conn.execute(
            f"select id, rank, score from {fn}(%(q)s, %(k)s{args})", {"q": query, "k": k, **kwargs}
        )
    ]


def assert_ranking(got, expected, k=10):
    expected = expected[:k]
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, score), (_, want) in zip(got, expected, strict=True):
        assert score == pytest.approx(want, rel=1e-5)


@pytest.fixture
def corpus(db):
    insert(db, *TEXTS)
    return db


QUERIES = ["index scan without blocking", "lock writes", "the rows of a table", "index index"]


@pytest.mark.parametrize("query", QUERIES)
def test_scan_before_the_first_build_is_exact_bm25(corpus, query):
    assert corpus.execute("select count(*) from hybrid_search_keyword_segment").fetchone()[0] == 0
    assert_ranking(search(corpus, query), bm25(corpus, query))


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_index_is_exact_bm25(corpus, query, k):
    corpus.execute("select hybrid_search_refresh()")
    assert corpus.execute("select count(*) from hybrid_search_keyword_changes").fetchone()[0] == 0
    assert_ranking(search(corpus, query, k), bm25(corpus, query), k)
    assert_ranking(search(corpus, query, k, fn="keyword_search_scan"), bm25(corpus, query), k)


def test_k1_and_b_are_configurable(corpus):
    corpus.execute("select hybrid_search_refresh()")
    corpus.execute("select hybrid_search_configure(bm25_k1 => 2.0, bm25_b => 0.3)")
    expected = bm25(corpus, "index table", k1=2.0, b=0.3)
    assert expected != bm25(corpus, "index table")
    assert_ranking(search(corpus, "index table"), expected)
    assert_ranking(search(corpus, "index table", fn="keyword_search_scan"), expected)
    with pytest.raises(psycopg.errors.CheckViolation):
        corpus.execute("select hybrid_search_configure(bm25_b => 1.5)")


def test_changed_documents_are_scored_with_the_build_statistics(corpus):
    corpus.execute("select hybrid_search_refresh()")
    built = terms(corpus)
    (new_id,) = insert(corpus, "a brand new zebra index about zebra lock contention")
    corpus.execute("update documents set content = 'nothing about that anymore' where id = 1")
    corpus.execute("delete from documents where id = 2")
    changed = {r[0] for r in corpus.execute("select doc_id from hybrid_search_keyword_changes")}
    assert changed == {1, 2, new_id}
    for query in ["zebra", "index lock", "concurrently"]:
        expected = bm25(corpus, query, stats_from=built)
        got = search(corpus, query)
        assert_ranking(got, expected)
        assert 2 not in [i for i, _ in got]
        assert 1 not in [i for i, _ in got]
    assert search(corpus, "zebra")[0][0] == new_id
    # a refresh takes the new statistics and forgets the changes
    corpus.execute("select hybrid_search_refresh()")
    assert corpus.execute("select count(*) from hybrid_search_keyword_changes").fetchone()[0] == 0
    assert_ranking(search(corpus, "index lock"), bm25(corpus, "index lock"))


def test_metadata_filter_and_match(corpus):
    corpus.execute("update documents set metadata = '{\"even\": true}' where id % 2 = 0")
    corpus.execute("select hybrid_search_refresh()")
    expected = [(i, s) for i, s in bm25(corpus, "index table") if i % 2 == 0]
    assert_ranking(search(corpus, "index table", filter='{"even": true}'), expected)
    hits = search(corpus, "index", match='"unique index" -gin')
    assert [i for i, _ in hits] == [7]
    assert search(corpus, "index", match='"unique index" -duplicate') == []


def test_stop_words_and_unknown_words_find_nothing(corpus):
    corpus.execute("select hybrid_search_refresh()")
    assert search(corpus, "the and of") == []
    assert search(corpus, "xylophone") == []


def test_truncate_empties_the_keyword_index(corpus):
    corpus.execute("select hybrid_search_refresh()")
    assert corpus.execute("select count(*) from hybrid_search_keyword_postings").fetchone()[0] > 0
    corpus.execute("truncate documents")
    for table in ("postings", "lexemes", "segment", "changes"):
        count = corpus.execute(f"select count(*) from hybrid_search_keyword_{table}").fetchone()[0]
        assert count == 0, table
