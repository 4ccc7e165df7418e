"""embed_mode 'queued': writes enqueue, workers embed; retries, errors, backfill."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from helpers import connect, insert, popen_interruptible

CLI = Path(sys.executable).with_name("hybrid-search")


@pytest.fixture
def queued(db):
    db.execute("select hybrid_search_configure(embed_mode => 'queued')")
    db.execute("truncate hybrid_search_worker_log")
    return db


def queue_ids(conn):
    return [r[0] for r in conn.execute("select doc_id from hybrid_search_queue order by doc_id")]


def unembedded(conn):
    return conn.execute("select count(*) from documents where dense is null").fetchone()[0]


def embedded_by_workers(conn):
    total = conn.execute("select coalesce(sum(embedded), 0) from hybrid_search_worker_log")
    return total.fetchone()[0]


def test_writes_enqueue_and_the_worker_embeds(queued):
    ids = insert(queued, "vacuum reclaims dead tuples", "a replica replays WAL", "btree pages")
    assert queue_ids(queued) == ids
    assert unembedded(queued) == 3
    status = queued.execute("select queued, ready, errors from hybrid_search_queue_status")
    assert status.fetchone() == (3, 3, 0)

    assert queued.execute("call hybrid_search_worker()").fetchone() == (3, 0)
    assert queue_ids(queued) == [] and unembedded(queued) == 0
    # what embedding each text alone gives (batching changes only rounding)
    worst = queued.execute(
        "select min(1 - (dense <=> embed_dense(content))), bool_and(sparse is not null)"
        " from documents"
    ).fetchone()
    assert worst[0] > 0.9999 and worst[1]
    row = queued.execute(
        "select queued, embedded_last_minute, workers_last_minute from hybrid_search_queue_status"
    ).fetchone()
    assert row == (0, 3, 1)


def test_a_document_rewritten_while_queued_is_embedded_once_from_its_newest_content(queued):
    (doc_id,) = insert(queued, "first draft")
    queued.execute("update documents set content = 'second draft' where id = %s", [doc_id])
    queued.execute("update documents set content = 'final text on indexes' where id = %s", [doc_id])
    assert queue_ids(queued) == [doc_id]
    assert queued.execute("call hybrid_search_worker()").fetchone() == (1, 0)
    assert queued.execute(
        "select 1 - (dense <=> embed_dense('final text on indexes')) > 0.9999 from documents"
    ).fetchone()[0]


def test_metadata_updates_and_rows_with_vectors_queue_nothing(queued):
    queued.execute("select hybrid_search_configure(embed_mode => 'sync')")
    (doc_id,) = insert(queued, "embedded in sync mode")
    queued.execute("select hybrid_search_configure(embed_mode => 'queued')")
    queued.execute("update documents set metadata = '{\"a\": 1}' where id = %s", [doc_id])
    assert queue_ids(queued) == []


def test_deleted_and_truncated_documents_leave_the_queue(queued):
    _, b = insert(queued, "kept", "deleted before the worker ran")
    queued.execute("delete from documents where id = %s", [b])
    assert queued.execute("call hybrid_search_worker()").fetchone() == (1, 0)
    assert queue_ids(queued) == []
    insert(queued, "queued, then truncated")
    queued.execute("truncate documents")
    assert queue_ids(queued) == []


def test_a_failing_document_is_retried_then_kept_in_errors_while_the_rest_embed(queued):
    queued.execute(
        "select hybrid_search_configure(max_content_chars => 40, queue_max_attempts => 2,"
        " queue_retry_seconds => 0)"
    )
    _, bad, _ = insert(queued, "short one", "x" * 41, "short two")
    # batch fails, then one by one: two stored, one retried; the retry fails for good
    assert queued.execute("call hybrid_search_worker()").fetchone() == (2, 1)
    assert queue_ids(queued) == []
    error = queued.execute("select doc_id, attempts, error from hybrid_search_errors").fetchone()
    assert error[:2] == (bad, 2) and "exceeds max_content_chars" in error[2]
    assert queued.execute("select errors from hybrid_search_queue_status").fetchone() == (1,)
    # nothing dropped: the document is still there, and comes back after a fix
    assert queued.execute("select count(*) from documents where id = %s", [bad]).fetchone() == (1,)
    queued.execute("select hybrid_search_configure(max_content_chars => 1000)")
    assert queued.execute("select hybrid_search_retry_errors()").fetchone() == (1,)
    assert queued.execute("call hybrid_search_worker()").fetchone() == (1, 0)
    assert unembedded(queued) == 0
    assert queued.execute("select count(*) from hybrid_search_errors").fetchone() == (0,)


def test_failed_attempts_back_off(queued):
    queued.execute(
        "select hybrid_search_configure(max_content_chars => 40, queue_retry_seconds => 60)"
    )
    insert(queued, "y" * 41)
    assert queued.execute("call hybrid_search_worker()").fetchone() == (0, 0)
    attempts, delay, last_error = queued.execute(
        "select attempts, not_before - now(), last_error from hybrid_search_queue"
    ).fetchone()
    assert attempts == 1 and delay.total_seconds() > 50 and "max_content_chars" in last_error
    assert queued.execute("select ready, retrying from hybrid_search_queue_status").fetchone() == (
        0,
        1,
    )
    # not ready yet: a worker leaves it alone
    assert queued.execute("call hybrid_search_worker()").fetchone() == (0, 0)
    assert queued.execute("select attempts from hybrid_search_queue").fetchone() == (1,)


def test_sync_mode_refuses_too_long_content_and_keeps_nothing(db):
    db.execute("select hybrid_search_configure(max_content_chars => 40)")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="max_content_chars"):
        insert(db, "z" * 41)
    assert db.execute("select count(*) from documents").fetchone() == (0,)


def test_a_worker_terminated_mid_batch_loses_nothing(queued, dsn):
    ids = insert(queued, *[f"document number {i} about replication" for i in range(20)])
    worker = connect(dsn)
    pid = worker.execute("select pg_backend_pid()").fetchone()[0]
    worker.execute("begin")
    taken = worker.execute("select taken, embedded from hybrid_search_process_queue(50)")
    assert taken.fetchone() == (20, 20)  # embedded, not yet committed
    queued.execute("select pg_terminate_backend(%s)", [pid])
    with pytest.raises(psycopg.OperationalError):
        worker.execute("commit")
    assert queue_ids(queued) == ids and unembedded(queued) == 20
    assert queued.execute("call hybrid_search_worker()").fetchone() == (20, 0)
    assert unembedded(queued) == 0


def test_concurrent_writers_and_two_workers_embed_every_row_exactly_once(queued, dsn):
    writers_done = threading.Event()
    errors = []

    def write(prefix):
        try:
            with connect(dsn) as conn:
                for n in range(10):
                    insert(conn, *[f"{prefix} row {n}.{i} on checkpoints" for i in range(5)])
        except Exception as error:  # reported below
            errors.append(error)

    def work():
        try:
            with connect(dsn) as conn:
                while True:
                    finished = writers_done.is_set()
                    conn.execute("call hybrid_search_worker(batch_size => 4)")
                    if finished:
                        return
                    time.sleep(0.05)
        except Exception as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(p,)) for p in ("alpha", "beta")]
    for t in workers + writers:
        t.start()
    for t in writers:
        t.join()
    writers_done.set()
    for t in workers:
        t.join()
    assert errors == []
    assert queued.execute("select count(*) from documents").fetchone() == (100,)
    assert unembedded(queued) == 0 and queue_ids(queued) == []
    assert embedded_by_workers(queued) == 100  # none twice, none skipped
    pids = queued.execute("select count(distinct worker_pid) from hybrid_search_worker_log")
    assert pids.fetchone()[0] == 2


def test_backfill_shows_progress_and_resumes_after_an_interrupt(queued, dsn):
    insert(queued, *[f"backfilled document {i} on partitioning" for i in range(40)])
    backfill = [CLI, "backfill", "--dsn", dsn, "--batch-size", "1"]
    process = popen_interruptible(backfill, stdout=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    assert first.startswith("queued 0 documents; 40 waiting")  # the trigger queued them
    progress = process.stdout.readline()
    assert "/40 rows" in progress and "rows/s" in progress and "ETA" in progress
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    done_before = embedded_by_workers(queued)
    assert 1 <= done_before < 40
    assert len(queue_ids(queued)) == 40 - done_before

    result = subprocess.run(backfill, capture_output=True, text=True, timeout=300, check=True)
    assert f"{40 - done_before}/{40 - done_before} rows" in result.stdout
    assert "done: " in result.stdout and "0 failed" in result.stdout
    assert unembedded(queued) == 0
    assert embedded_by_workers(queued) == 40  # nothing repeated, nothing lost


def test_backfill_all_reembeds_every_document(db, dsn):
    insert(db, "sync one", "sync two")
    db.execute("truncate hybrid_search_worker_log")
    result = subprocess.run(
        [CLI, "backfill", "--dsn", dsn, "--all"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("queued 2 documents")
    assert embedded_by_workers(db) == 2


def test_worker_arguments_are_checked(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_batches"):
        db.execute("call hybrid_search_worker(max_batches => 0)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="batch_size"):
        db.execute("select * from hybrid_search_process_queue(0)")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("select hybrid_search_configure(embed_mode => 'later')")


def test_the_worker_command_wakes_on_notify_and_embeds(queued, dsn):
    worker = popen_interruptible(
        [CLI, "worker", "--dsn", dsn, "--poll", "60"], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(3)  # listening, queue empty
        insert(queued, "queued while a worker listens", "a second one")
        deadline = time.monotonic() + 60
        while unembedded(queued) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert unembedded(queued) == 0  # long before the 60 s poll: NOTIFY woke it
    finally:
        worker.send_signal(signal.SIGINT)
        out, _ = worker.communicate(timeout=30)
    assert "embedded 2, failed for good 0" in out
