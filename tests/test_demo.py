"""The demo's corpus loader: one INSERT per core, nothing loaded twice, a partial load
(an interrupted demo) replaced."""

from hybrid_search_installer import demo

ROWS = [
    {"content": f"section {i} on vacuum and dead tuples", "metadata": {"source": "probe", "i": i}}
    for i in range(250)
]


def loaded(db) -> list[tuple]:
    return db.execute(
        "select (metadata->>'i')::int, dense is not null and sparse is not null from documents"
        " where metadata->>'source' = 'probe' order by 1"
    ).fetchall()


def test_demo_load_is_parallel_idempotent_and_resumable(db, dsn):
    assert demo._insert(dsn, "probe", lambda: ROWS) == 250
    assert loaded(db) == [(i, True) for i in range(250)]
    assert demo._insert(dsn, "probe", lambda: ROWS) == 0

    db.execute("delete from documents where (metadata->>'i')::int >= 100")  # interrupted run
    assert demo._insert(dsn, "probe", lambda: ROWS) == 250
    assert loaded(db) == [(i, True) for i in range(250)]
