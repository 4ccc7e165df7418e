"""The sparse inverted index inside PostgreSQL: exact, and never stale."""

import threading
import time

import psycopg
import pytest
from helpers import connect, insert

QUERIES = ["index", "replica lag", "vacuum dead tuples", "ERR_CONN_REFUSED", "lock writes table"]


def by_index(conn, query, k=10, flt=None):
    return conn.execute(
        "select id, score from sparse_search(embed_sparse(%s), %s, %s::jsonb)", [query, k, flt]
    ).fetchall()


def by_scan(conn, query, k=10, flt=None):
    return conn.execute(
        "select id, score from sparse_search_scan(embed_sparse(%s), %s, %s::jsonb)", [query, k, flt]
    ).fetchall()


def assert_same(conn, queries=QUERIES, k=10, flt=None):
    for query in queries:
        found, expected = by_index(conn, query, k, flt), by_scan(conn, query, k, flt)
        assert [r[0] for r in found] == [r[0] for r in expected], query
        assert [r[1] for r in found] == pytest.approx([r[1] for r in expected], rel=1e-5)


@pytest.fixture
def big(db):
    """3,000 documents: enough for common tokens to span several postings blocks."""
    db.execute(
        "insert into documents (content, metadata)"
        " select 'doc ' || i || ' about ' || (array['index', 'replica lag', 'vacuum dead tuples',"
        " 'lock writes table', 'connection refused'])[1 + i % 5] || ' number ' || (i % 97),"
        " jsonb_build_object('tenant', i % 10) from generate_series(1, 3000) i"
    )
    insert(db, "ERR_CONN_REFUSED from the pooler")
    db.execute("select hybrid_search_refresh()")
    blocks = db.execute("select max(block) from hybrid_search_sparse_postings").fetchone()[0]
    assert blocks >= 2
    return db


@pytest.mark.parametrize("k", [1, 10, 100])
def test_index_equals_exact_scan(big, k):
    assert_same(big, k=k)


def test_index_with_filter_equals_exact_scan(big):
    assert_same(big, flt='{"tenant": 3}')
    found = by_index(big, "lock writes table", 100, '{"tenant": 3}')
    assert len(found) == 100  # k results whenever k matching documents exist


def test_writes_after_refresh_are_seen_at_once(big):
    (new_id,) = insert(big, "ERR_CONN_REFUSED again, from a new document")
    assert new_id in [r[0] for r in by_index(big, "ERR_CONN_REFUSED")]
    old = big.execute(
        "select id from documents where content like 'ERR_CONN_REFUSED from%'"
    ).fetchone()[0]
    big.execute("update documents set content = 'nothing to see' where id = %s", [old])
    assert old not in [r[0] for r in by_index(big, "ERR_CONN_REFUSED")]
    big.execute("delete from documents where id = %s", [new_id])
    assert by_index(big, "ERR_CONN_REFUSED") == by_scan(big, "ERR_CONN_REFUSED")
    assert new_id not in [r[0] for r in by_index(big, "ERR_CONN_REFUSED", 100)]
    big.execute("delete from documents where id % 7 = 0")
    assert_same(big, k=50)
    big.execute("select hybrid_search_refresh()")
    assert big.execute("select count(*) from hybrid_search_sparse_changes").fetchone()[0] == 0
    assert_same(big, k=50)


def test_only_updates_of_the_indexed_column_are_noted(big):
    big.execute("select hybrid_search_refresh()")

    def noted():
        return big.execute(
            "select array_agg(doc_id order by doc_id) from hybrid_search_sparse_changes"
        ).fetchone()[0]

    big.execute("update documents set metadata = '{\"x\": 1}' where id <= 3")
    assert noted() is None
    big.execute("update documents set content = content || ' and vacuum' where id = 2")
    assert noted() == [2]
    big.execute("update documents set id = -id where id = 3")  # a key change is a delete + insert
    assert noted() == [-3, 2, 3]


def test_truncate_empties_the_index(big):
    big.execute("truncate documents")
    assert big.execute("select count(*) from hybrid_search_sparse_postings").fetchone()[0] == 0
    assert by_index(big, "index") == []
    insert(big, "index after truncate")
    assert len(by_index(big, "index")) == 1


def test_write_committed_after_a_concurrent_refresh_is_not_lost(big, dsn):
    with connect(dsn) as writer:
        writer.autocommit = False
        (doc_id,) = insert(writer, "zebra index written while the index is rebuilt")
        big.execute("select hybrid_search_refresh()")  # its snapshot cannot see the writer
        writer.commit()
    assert doc_id in [r[0] for r in by_index(big, "zebra index written", 5)]
    assert_same(big)


def test_concurrent_writers_and_refreshes(big, dsn):
    errors = []

    def write(seed):
        try:
            with connect(dsn) as conn:
                for i in range(15):
                    insert(conn, f"concurrent index document {seed} {i}")
                    conn.execute(
                        "update documents set content = content || ' updated' where id = %s",
                        [1 + (seed * 37 + i * 11) % 3000],
                    )
                    conn.execute(
                        "delete from documents where id = %s", [1 + (seed * 53 + i) % 3000]
                    )
        except psycopg.Error as error:  # pragma: no cover - reported below
            errors.append(error)

    def refresh():
        try:
            with connect(dsn) as conn:
                for _ in range(3):
                    conn.execute("select hybrid_search_refresh()")
        except psycopg.Error as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=write, args=(s,)) for s in range(2)]
    threads.append(threading.Thread(target=refresh))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_same(big, [*QUERIES, "concurrent index document"], k=100)
    big.execute("select hybrid_search_refresh()")
    assert_same(big, [*QUERIES, "concurrent index document"], k=100)


def _wait_until_blocked_or_done(conn, pid, thread):
    deadline = time.monotonic() + 30
    while (
        thread.is_alive()
        and not conn.execute(
            "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", [pid]
        ).fetchone()[0]
    ):
        assert time.monotonic() < deadline, f"backend {pid} neither waited nor finished"
        time.sleep(0.05)


def test_a_refresh_and_a_delete_of_the_same_row_do_not_deadlock(db, dsn):
    """A refresh that waits for a row's sparse change (held here by a third session)
    while a DELETE of that row goes on finishes without a deadlock (when the keyword
    leg kept a change list too, a refresh forgot both and could deadlock)."""
    [doc] = insert(db, "a row that a refresh and a delete both want")
    holder, refresher, writer = connect(dsn), connect(dsn), connect(dsn)
    errors = []

    def run(conn, statement):
        try:
            conn.execute(statement, [doc] if "%s" in statement else None)
        except psycopg.Error as error:
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(refresher, "select hybrid_search_refresh()")),
        threading.Thread(target=run, args=(writer, "delete from documents where id = %s")),
    ]
    try:
        holder.execute("begin")
        holder.execute(
            "select 1 from hybrid_search_sparse_changes where doc_id = %s for update", [doc]
        )
        for thread, conn in zip(threads, (refresher, writer), strict=True):
            thread.start()
            _wait_until_blocked_or_done(db, conn.info.backend_pid, thread)
        holder.execute("commit")
        for thread in threads:
            thread.join()
        assert errors == []
    finally:
        for conn in (holder, refresher, writer):
            conn.close()
    assert_same(db, ["a row that a refresh and a delete both want", *QUERIES])
    db.execute("select hybrid_search_refresh()")  # what was skipped goes now
    assert db.execute("select count(*) from hybrid_search_sparse_changes").fetchone()[0] == 0


def test_row_level_security_holds_in_the_index(big):
    big.execute("drop role if exists hs_tenant")
    big.execute("create role hs_tenant")
    try:
        # granted before row-level security is on, so the role reads the index
        big.execute("select hybrid_search_grant('hs_tenant', 'search')")
        big.execute("alter table documents enable row level security")
        big.execute(
            "create policy tenant3 on documents to hs_tenant using ((metadata->>'tenant')::int = 3)"
        )
        big.execute("set role hs_tenant")
        found = by_index(big, "index", 50)
        big.execute("reset role")
        expected = by_scan(big, "index", 50, '{"tenant": 3}')
        assert [r[0] for r in found] == [r[0] for r in expected]
    finally:
        big.execute("reset role")
        big.execute("drop policy if exists tenant3 on documents")
        big.execute("alter table documents disable row level security")
        big.execute("drop owned by hs_tenant")
        big.execute("drop role hs_tenant")


def test_rebuilds_in_one_transaction_do_not_reuse_cached_blocks(big):
    with big.transaction():
        big.execute("select hybrid_search_refresh()")
        assert_same(big, ["index"], k=100)  # caches the common tokens' blocks
        (doc_id,) = insert(big, "index index about index, number 1")
        big.execute("select hybrid_search_refresh()")
        # the whole ranking: a stale cached block would lose the new document
        assert_same(big, ["index"], k=5000)
        assert doc_id in [r[0] for r in by_index(big, "index", 5000)]
