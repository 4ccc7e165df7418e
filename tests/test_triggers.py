"""Rows are embedded by triggers inside the writing transaction, in batches."""

import io

import psycopg
import pytest
from helpers import insert, model_calls


def embedding_state(conn, doc_id):
    return conn.execute(
        "select dense::text, sparse::text, fts::text, model, embedded_at"
        " from documents where id = %s",
        [doc_id],
    ).fetchone()


def test_insert_embeds(db, model_dir):
    (doc_id,) = insert(db, "a replica replays the primary's WAL")
    dense, sparse, fts, model, embedded_at = embedding_state(db, doc_id)
    assert dense == db.execute("select embed_dense(content)::text from documents").fetchone()[0]
    assert sparse == db.execute("select embed_sparse(content)::text from documents").fetchone()[0]
    assert "replica" in fts and "wal" in fts
    assert model == str(model_dir)
    assert embedded_at is not None


def test_update_of_content_reembeds(db):
    # writes embed on num_threads threads, queries on query_threads: the same count (1) for
    # both, so the two vectors are summed in the same order
    db.execute("select hybrid_search_configure(num_threads => 1, query_threads => 1)")
    (doc_id,) = insert(db, "first version")
    before = embedding_state(db, doc_id)
    db.execute(
        "update documents set content = 'second version about vacuum' where id = %s", [doc_id]
    )
    after = embedding_state(db, doc_id)
    assert after[0] != before[0] and after[1] != before[1]
    assert "vacuum" in after[2]
    assert after[4] > before[4]
    assert (
        after[0]
        == db.execute("select embed_dense('second version about vacuum')::text").fetchone()[0]
    )


def test_metadata_only_update_does_not_reembed(db):
    (doc_id,) = insert(db, "metadata stays out of the embedding")
    before = embedding_state(db, doc_id)
    calls = model_calls(db)
    db.execute("""update documents set metadata = '{"tag": "x"}' where id = %s""", [doc_id])
    db.execute("update documents set content = content where id = %s", [doc_id])  # same text
    assert embedding_state(db, doc_id) == before
    assert model_calls(db) == calls


def test_thousand_row_insert_select_is_embedded_in_batches(db):
    batch_size = db.execute("select batch_size from hybrid_search_settings").fetchone()[0]
    calls = model_calls(db)
    db.execute(
        "insert into documents (content)"
        " select 'document number ' || i || ' about topic ' || (i % 17)"
        " from generate_series(1, 1000) i"
    )
    assert model_calls(db) - calls == -(
        -1000 // batch_size
    )  # ceil: one call per batch, not per row
    assert db.execute("select count(*) from documents where embedded_at is null").fetchone()[0] == 0
    # each row got its own embedding, not a neighbour's
    mismatched = db.execute(
        "select count(*) from (select * from documents order by id limit 3) d"
        " where d.dense::text <> embed_dense(d.content)::text"
    ).fetchone()[0]
    assert mismatched == 0


def test_batch_size_setting_is_used(db):
    db.execute("select hybrid_search_configure(batch_size => 7)")
    calls = model_calls(db)
    db.execute("insert into documents (content) select 'row ' || i from generate_series(1, 50) i")
    assert model_calls(db) - calls == 8


def test_copy_is_embedded(db):
    data = "".join(f"copied line {i}\n" for i in range(40))
    with db.cursor() as cur, cur.copy("copy documents (content) from stdin") as copy:
        copy.write(io.StringIO(data).read())
    assert db.execute("select count(*) from documents where dense is not null").fetchone()[0] == 40


def bm25_documents(conn):
    """The document count the BM25 index's statistics hold now."""
    stats = conn.execute("select to_bm25query('documents_fts_bm25_idx', 'x')::text::jsonb")
    return stats.fetchone()[0]["documents"]


def test_embedded_insert_counts_once_in_bm25_statistics(db):
    # the embedding UPDATE leaves a dead first version of each row; it carries no fts, so
    # BM25's N counts every row once before any VACUUM, for COPY and INSERT alike
    db.execute("truncate documents")
    insert(db, *[f"row {i} about wal" for i in range(7)])
    with db.cursor().copy("copy documents (content) from stdin") as copy:
        copy.write("copied row about vacuum\nanother copied row\n")
    assert bm25_documents(db) == 9
    assert db.execute("select count(*) from documents where fts is null").fetchone()[0] == 0
    # rows that are queued keep fts from the insert: the keyword leg finds them at once
    db.execute("set hybrid_search.queue_writes = on")
    (queued,) = insert(db, "queued row about checkpoints")
    db.execute("reset hybrid_search.queue_writes")
    assert embedding_state(db, queued)[0] is None
    assert "checkpoint" in embedding_state(db, queued)[2]
    assert bm25_documents(db) == 10
    # a new content: the old version counts until VACUUM, the statement's own does not
    db.execute("update documents set content = 'rewritten about wal' where id = %s", [queued - 1])
    assert bm25_documents(db) == 11
    db.execute("vacuum documents")
    assert bm25_documents(db) == 10
    assert queued in [r[0] for r in db.execute("select id from keyword_search('checkpoints', 5)")]


def test_null_content_is_refused_and_nothing_is_written(db):
    insert(db, "already here")
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute("insert into documents (content) values ('fine'), (null)")
    assert db.execute("select count(*) from documents").fetchone()[0] == 1


def test_failed_embedding_rolls_back_the_write(db, model_dir):
    insert(db, "kept")
    db.execute("update hybrid_search_config set model = '/nonexistent/model'")
    try:
        with pytest.raises(psycopg.Error, match="/nonexistent/model"):
            db.execute("insert into documents (content) values ('lost?')")
        with pytest.raises(psycopg.Error, match="/nonexistent/model"):
            db.execute("update documents set content = 'changed'")
    finally:
        db.execute("update hybrid_search_config set model = %s", [str(model_dir)])
    assert db.execute("select content from documents").fetchall() == [("kept",)]


def test_empty_content_is_embedded(db):
    (doc_id,) = insert(db, "")
    assert embedding_state(db, doc_id)[0] is not None
