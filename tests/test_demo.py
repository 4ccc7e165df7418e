"""The demo's corpus loader: chunks spread over one backend per core, nothing loaded
twice, an interrupted load resumed."""

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


def test_demo_load_is_parallel_idempotent_and_resumable(db, dsn, capsys):
    assert demo._insert(dsn, "probe", ROWS) == 250
    assert loaded(db) == [(i, True) for i in range(250)]
    # the progress bar counted every row (one line per chunk: not a terminal)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"[{'#' * 30}] 250/250 rows")
    assert demo._insert(dsn, "probe", ROWS) == 0

    db.execute("delete from documents where (metadata->>'i')::int >= 100")  # interrupted run
    assert demo._insert(dsn, "probe", ROWS) == 150
    assert loaded(db) == [(i, True) for i in range(250)]
