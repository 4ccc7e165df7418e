"""The token statistics materialized view and sparse_explain."""

from collections import Counter

import pytest
from helpers import insert, parse_sparse


def test_refresh_matches_documents(db):
    insert(db, "vacuum and analyze", "vacuum freezes old tuples", "replication slots")
    db.execute("select hybrid_search_refresh()")
    stats = {
        t: (df, w) for t, df, w in db.execute("select * from hybrid_search_token_stats").fetchall()
    }
    df, best = Counter(), {}
    for (text,) in db.execute("select sparse::text from documents").fetchall():
        for token, weight in parse_sparse(text).items():
            df[token] += 1
            best[token] = max(best.get(token, 0.0), weight)
    assert set(stats) == set(df)
    for token, (count, weight) in stats.items():
        assert count == df[token]
        assert weight == pytest.approx(best[token], rel=1e-6)


def test_refresh_sees_deletes(db):
    insert(db, "temporary document")
    db.execute("select hybrid_search_refresh()")
    db.execute("delete from documents")
    db.execute("select hybrid_search_refresh()")
    assert db.execute("select count(*) from hybrid_search_token_stats").fetchone()[0] == 0


def test_truncate_empties_the_statistics(db):
    # issue 13, defect 9: TRUNCATE documents left every token's frequency in the view
    insert(db, "vacuum and analyze", "replication slots")
    db.execute("select hybrid_search_refresh()")
    assert db.execute("select count(*) from hybrid_search_token_stats").fetchone()[0] > 0
    db.execute("truncate documents")
    assert db.execute("select count(*) from hybrid_search_token_stats").fetchone()[0] == 0
    assert db.execute(
        "select count(*) from sparse_explain('vacuum') where document_frequency > 0"
    ).fetchone() == (0,)
    statuses = {n: s for n, s, _ in db.execute("select * from hybrid_search_check()")}
    assert statuses["token_stats"] == "ok"


def test_sparse_explain_bounds_each_token(db):
    insert(db, "ERR_CONN_REFUSED from the pooler", "nothing in common here")
    db.execute("select hybrid_search_refresh()")
    rows = db.execute("select * from sparse_explain('ERR_CONN_REFUSED')").fetchall()
    assert rows
    query = parse_sparse(db.execute("select embed_sparse('ERR_CONN_REFUSED')::text").fetchone()[0])
    assert {r[0] for r in rows} == set(query)
    for token_id, token, weight, _df, max_weight, bound in rows:
        assert token  # the tokenizer's text for the id
        assert weight == pytest.approx(query[token_id], rel=1e-6)
        assert bound == pytest.approx(weight * (max_weight or 0), rel=1e-6)
    # the bound really bounds: no document gets more from a token
    best = db.execute(
        "select max(sparse_dot(sparse, embed_sparse('ERR_CONN_REFUSED'))) from documents"
    ).fetchone()[0]
    assert best <= sum(r[5] for r in rows) + 1e-6
