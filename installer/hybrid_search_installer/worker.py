"""`hybrid-search worker` and `hybrid-search backfill`: drain the embedding queue.

Both only call the extension's SQL (hybrid_search_worker,
hybrid_search_process_queue): each batch is one committed transaction, so
stopping either one (Ctrl-C, kill) loses at most the batch in flight, which
stays queued and is redone by the next run.
"""

import psycopg

from . import report

CHANNEL = "hybrid_search_queue"


def run_worker(dsn: str, batch_size: int | None, once: bool, poll_seconds: float) -> None:
    """Embed queued documents until the queue is empty (once) or forever,
    waking on NOTIFY from hybrid_search_enqueue and every poll_seconds for retries."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"listen {CHANNEL}")
        while True:
            embedded, failed = conn.execute(
                "call hybrid_search_worker(batch_size => %s)", [batch_size]
            ).fetchone()
            if embedded or failed:
                print(f"embedded {embedded}, failed for good {failed}", flush=True)
            if once:
                return
            for _ in conn.notifies(timeout=poll_seconds, stop_after=1):
                pass


def backfill(dsn: str, all_documents: bool, batch_size: int | None) -> int:
    """Queue documents without vectors (or all), then embed the queue with a
    progress bar. Returns the number of documents that failed for good."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        added = conn.execute("select hybrid_search_backfill(%s)", [all_documents]).fetchone()[0]
        total = conn.execute("select count(*) from hybrid_search_queue").fetchone()[0]
        print(f"queued {added} documents; {total} waiting in all", flush=True)
        progress, failed = report.Progress(total), 0
        while True:
            taken, embedded, _, failed_now = conn.execute(
                "select * from hybrid_search_process_queue(%s)", [batch_size]
            ).fetchone()
            if taken == 0:
                break
            progress.advance(embedded + failed_now)
            failed += failed_now
        progress.finish()
        done = progress.done
        waiting = conn.execute("select count(*) from hybrid_search_queue").fetchone()[0]
        print(
            f"done: {done - failed} embedded, {failed} failed for good (see hybrid_search_errors),"
            f" {waiting} waiting for a retry"
        )
        return failed
