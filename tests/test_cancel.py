"""statement_timeout and pg_cancel_backend stop a long embedding within about one
batch, and the transaction ends aborted, with nothing written."""

import threading
import time

import psycopg
import pytest
from helpers import connect, insert

# long enough to take a minute or more at batch_size 2 with the tiny model
MANY = "select count(*) from embed_batch(array(select 'text number ' || i from generate_series(1, 40000) i))"  # noqa: E501
MANY_ROWS = "insert into documents (content) select 'row ' || i from generate_series(1, 40000) i"


@pytest.fixture
def slow(db):
    db.execute("select hybrid_search_configure(batch_size => 2)")
    db.execute("select embed_dense('load the model first')")
    return db


@pytest.mark.parametrize("statement", [MANY, MANY_ROWS])
def test_statement_timeout_interrupts_embedding(slow, statement):
    insert(slow, "committed before")
    started = time.monotonic()
    timed_out = pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout")
    with timed_out, slow.transaction():
        insert(slow, "written in the aborted transaction")
        slow.execute("set local statement_timeout = '1s'")
        slow.execute(statement)
    assert time.monotonic() - started < 5  # one batch of two texts takes milliseconds
    assert slow.execute("select content from documents").fetchall() == [("committed before",)]
    assert slow.execute("select count(*) from embed_batch(array['still works'])").fetchone() == (1,)


@pytest.mark.parametrize("statement", [MANY, MANY_ROWS])
def test_pg_cancel_backend_interrupts_embedding(slow, dsn, statement):
    pid = slow.execute("select pg_backend_pid()").fetchone()[0]
    cancelled = []

    def cancel():
        with connect(dsn) as other:
            for _ in range(100):  # wait until the statement is running
                running = other.execute(
                    "select state = 'active' and query like '%%generate_series(1, 40000)%%'"
                    " from pg_stat_activity where pid = %s",
                    [pid],
                ).fetchone()[0]
                if running:
                    break
                time.sleep(0.05)
            time.sleep(1)
            cancelled.append(time.monotonic())
            other.execute("select pg_cancel_backend(%s)", [pid])

    thread = threading.Thread(target=cancel)
    thread.start()
    try:
        cancelled_by_user = pytest.raises(psycopg.errors.QueryCanceled, match="user request")
        with cancelled_by_user, slow.transaction():
            insert(slow, "written in the aborted transaction")
            slow.execute(statement)
    finally:
        thread.join()
    assert time.monotonic() - cancelled[0] < 3
    assert slow.execute("select count(*) from documents").fetchone()[0] == 0
    assert slow.execute("select 1").fetchone() == (1,)
