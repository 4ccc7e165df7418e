"""Tenants (roles granted 'write' under a row-level security policy on documents) can
neither stop, poison nor read another tenant's data through the queue, the errors, the
system columns of documents or enabled tables; their keyword scores are BM25 over their
own rows (issue 13, defects 2 to 6 and 13)."""

import psycopg
import pytest
from helpers import bm25, insert, tenant_policy, terms

TENANTS = ("hs_tenant_a", "hs_tenant_b")


@pytest.fixture
def tenants(db):
    """The README's tenant policy on documents, two writer roles, queued embedding."""
    db.execute("truncate hybrid_search_queue, hybrid_search_errors")
    with tenant_policy(db, TENANTS):
        yield db
        db.execute("reset role")
        db.execute("drop table if exists public.hs_tickets")


def as_tenant(conn, tenant):
    conn.execute(f"set role {tenant}")


def write(conn, tenant, *contents):
    return insert(conn, *contents, metadata={"tenant": tenant})


def denied(conn, statement, params=None):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement, params)


def clean_check(conn):
    conn.execute("reset role")
    bad = [r for r in conn.execute("select * from hybrid_search_check()") if r[1] == "error"]
    assert bad == []


def assert_the_worker_embeds(conn, doc_id):
    """The owner's worker run embeds the document, and the check stays clean."""
    conn.execute("call hybrid_search_worker()")
    assert conn.execute(
        "select dense is not null from documents where id = %s", [doc_id]
    ).fetchone() == (True,)
    clean_check(conn)


def test_a_writer_writes_in_queued_mode_and_the_worker_embeds(tenants):
    # defect 2: ON CONFLICT in the queueing needed SELECT on the queue
    tenants.execute("select hybrid_search_configure(embed_mode => 'queued')")
    as_tenant(tenants, "hs_tenant_a")
    (doc_id,) = write(tenants, "hs_tenant_a", "queued by a tenant about vacuum")
    tenants.execute(
        "update documents set content = 'rewritten while queued' where id = %s", [doc_id]
    )
    tenants.execute("reset role")
    assert tenants.execute("select doc_id from hybrid_search_queue").fetchall() == [(doc_id,)]
    assert_the_worker_embeds(tenants, doc_id)


def test_a_writer_cannot_touch_the_queue_errors_sequence_or_change_lists(tenants):
    # defect 3: a tenant parked other tenants' documents with not_before 'infinity'
    tenants.execute("select hybrid_search_configure(embed_mode => 'queued')")
    as_tenant(tenants, "hs_tenant_b")
    (victim,) = write(tenants, "hs_tenant_b", "tenant B's document")
    as_tenant(tenants, "hs_tenant_a")
    for statement in [
        "insert into hybrid_search_queue (doc_id, not_before)"
        " select g, 'infinity' from generate_series(1, 20) g",
        "update hybrid_search_queue set not_before = 'infinity'",
        "delete from hybrid_search_queue",
        "select * from hybrid_search_queue",
        "select * from hybrid_search_queue_status",
        "insert into hybrid_search_errors (doc_id, attempts, error) values (1, 1, 'x')",
        "insert into hybrid_search_worker_log (embedded, retried, failed, seconds)"
        " values (1e9, 0, 0, 1)",
        "insert into hybrid_search_sources (source, key_column, content_column)"
        " values ('public.x', 'id', 'body')",
        "select nextval('documents_id_seq')",
        "select setval('documents_id_seq', 1)",
        "select hybrid_search_enqueue(array[1])",
        "select hybrid_search_embed_documents(array[1])",
        "select * from hybrid_search_process_queue()",
    ]:
        denied(tenants, statement)
    tenants.execute("reset role")
    assert_the_worker_embeds(tenants, victim)


def test_error_rows_are_the_owners_alone(tenants):
    # defect 4: a tenant read and deleted other tenants' error rows
    as_tenant(tenants, "hs_tenant_b")
    (doc_id,) = write(tenants, "hs_tenant_b", "fails for good")
    tenants.execute("reset role")
    tenants.execute(
        "insert into hybrid_search_errors (doc_id, attempts, error) values (%s, 5, 'secret')",
        [doc_id],
    )
    as_tenant(tenants, "hs_tenant_a")
    denied(tenants, "select * from hybrid_search_errors")
    denied(tenants, "delete from hybrid_search_errors")
    denied(tenants, "select hybrid_search_retry_errors()")
    tenants.execute("reset role")
    assert tenants.execute("select count(*) from hybrid_search_errors").fetchone() == (1,)


SYSTEM_COLUMNS = {
    "model": "'bogus'",
    "dense": "dense",
    "sparse": "sparse",
    "fts": "to_tsvector('simple', 'planted')",
    "embedded_at": "'infinity'",
    "source": "'public.hs_tickets'",
    "source_key": "'2'",
    "colbert": "'\\x00'::bytea",
    "id": "id + 1000",
}


@pytest.mark.parametrize("column", sorted(SYSTEM_COLUMNS))
def test_a_writer_cannot_set_system_columns(tenants, column):
    # defect 5: model = 'bogus' on one's own row broke every search of the owner
    as_tenant(tenants, "hs_tenant_a")
    (doc_id,) = write(tenants, "hs_tenant_a", "tenant A's row about vacuum")
    denied(
        tenants,
        f"update documents set {column} = {SYSTEM_COLUMNS[column]} where id = %s",
        [doc_id],
    )
    denied(
        tenants,
        f"insert into documents (content, metadata, {column})"
        f" select 'x', '{{\"tenant\": \"hs_tenant_a\"}}', {SYSTEM_COLUMNS[column]}"
        " from documents where id = %s",
        [doc_id],
    )
    tenants.execute("reset role")
    assert tenants.execute("select id from hybrid_search('vacuum', 5)").fetchall() == [(doc_id,)]
    clean_check(tenants)


def test_ids_and_source_keys_cannot_be_probed_or_taken(tenants):
    # defect 6: a planted (source, source_key) made another tenant's table write fail,
    # and the unique constraints told whether an id or key exists
    tenants.execute("create table public.hs_tickets (id int primary key, body text, tenant text)")
    tenants.execute("select hybrid_search_enable('public.hs_tickets', 'body', mode => 'sync')")
    tenants.execute("grant insert, select on public.hs_tickets to hs_tenant_a, hs_tenant_b")
    as_tenant(tenants, "hs_tenant_b")
    (existing,) = write(tenants, "hs_tenant_b", "tenant B's row")
    as_tenant(tenants, "hs_tenant_a")
    for doc_id in (existing, existing + 1000):  # the same answer whether the id exists or not
        denied(
            tenants,
            "insert into documents (id, content, metadata)"
            " values (%s, 'x', '{\"tenant\": \"hs_tenant_a\"}')",
            [doc_id],
        )
    denied(
        tenants,
        "insert into documents (content, metadata, source, source_key)"
        " values ('planted', '{\"tenant\": \"hs_tenant_a\"}', 'public.hs_tickets', '2')",
    )
    # nor can a row claim to be a copy of the table (source => filters on metadata._source)
    with pytest.raises(psycopg.errors.CheckViolation, match="_source"):
        insert(
            tenants, "planted", metadata={"tenant": "hs_tenant_a", "_source": "public.hs_tickets"}
        )
    as_tenant(tenants, "hs_tenant_b")
    # a tenant writing the enabled table needs no right on documents' system columns
    tenants.execute("insert into public.hs_tickets values (2, 'tenant B ticket', 'hs_tenant_b')")
    tenants.execute("reset role")
    assert tenants.execute(
        "select content, metadata->>'tenant', dense is not null from documents"
        " where source = 'public.hs_tickets' and source_key = '2'"
    ).fetchall() == [("tenant B ticket", "hs_tenant_b", True)]
    assert tenants.execute(
        "select metadata->>'id' from hybrid_search('ticket', 5, source => 'public.hs_tickets')"
    ).fetchall() == [("2",)]
    tenants.execute("select hybrid_search_disable('public.hs_tickets')")
    clean_check(tenants)


def test_grant_leaves_exactly_the_level(tenants):
    """Privilege map: a writer holds SELECT on documents, INSERT/UPDATE of content and
    metadata, DELETE; nothing on the queue, errors, sequence; granting 'search' after
    'write' takes the writing back."""
    rows = tenants.execute(
        "select privilege_type, column_name from information_schema.column_privileges"
        " where grantee = 'hs_tenant_a' and table_name = 'documents'"
        " and privilege_type <> 'SELECT' order by 1, 2"
    ).fetchall()
    assert rows == [
        ("INSERT", "content"),
        ("INSERT", "metadata"),
        ("UPDATE", "content"),
        ("UPDATE", "metadata"),
    ]
    for table in ("hybrid_search_queue", "hybrid_search_errors", "hybrid_search_worker_log"):
        assert not tenants.execute(
            "select has_table_privilege('hs_tenant_a', %s, 'select,insert,update,delete')",
            [table],
        ).fetchone()[0]
    assert not tenants.execute(
        "select has_sequence_privilege('hs_tenant_a', 'documents_id_seq', 'usage,select,update')"
    ).fetchone()[0]
    # a function granted by hand that the level does not include is taken back
    tenants.execute(
        "grant execute on function hybrid_search_embed_documents(bigint[]) to hs_tenant_a"
    )
    tenants.execute("select hybrid_search_grant('hs_tenant_a', 'search')")
    assert not tenants.execute(
        "select has_function_privilege('hs_tenant_a', 'hybrid_search_embed_documents(bigint[])',"
        " 'execute')"
    ).fetchone()[0]
    assert not tenants.execute(
        "select has_any_column_privilege('hs_tenant_a', 'documents', 'insert,update')"
    ).fetchone()[0]
    assert tenants.execute(
        "select has_table_privilege('hs_tenant_a', 'documents', 'select')"
    ).fetchone()[0]


def test_tenant_keyword_scores_are_bm25_over_the_tenants_own_rows(tenants):
    """Defect 13: a tenant's BM25 statistics (document count, average length, document
    frequencies) are those of the rows it may see, computed at query time: the scores
    equal the owner's on a corpus of only those rows, and nothing another tenant writes
    changes them (corpus-wide frequencies would tell a tenant which words others use)."""
    tenants.execute("reset role")
    mine = write(
        tenants,
        "hs_tenant_a",
        "vacuum reclaims dead tuples",
        "a replica replays the WAL",
        "vacuum freezes old tuples before wraparound",
    )
    write(tenants, "hs_tenant_b", "merger merger merger vacuum", "the merger closes on Friday")
    tenants.execute("select hybrid_search_refresh()")
    query = "vacuum tuples merger"
    as_tenant(tenants, "hs_tenant_a")
    scores = tenants.execute("select id, score from keyword_search(%s, 10)", [query]).fetchall()
    assert {i for i, _ in scores} <= set(mine) and scores
    # another tenant's new rows with the query's words change nothing for tenant A
    as_tenant(tenants, "hs_tenant_b")
    write(tenants, "hs_tenant_b", *["vacuum tuples merger"] * 5)
    as_tenant(tenants, "hs_tenant_a")
    again = tenants.execute("select id, score from keyword_search(%s, 10)", [query]).fetchall()
    assert [i for i, _ in again] == [i for i, _ in scores]
    assert [s for _, s in again] == pytest.approx([s for _, s in scores], rel=1e-9)
    # a BM25 over tenant A's rows alone (their statistics), and the exact scan as tenant A
    tenants.execute("reset role")
    own = {i: t for i, t in terms(tenants).items() if i in mine}
    expected = [(i, s) for i, s in bm25(tenants, query, stats_from=own) if i in own]
    as_tenant(tenants, "hs_tenant_a")
    exact = tenants.execute("select id, score from keyword_search_scan(%s, 10)", [query]).fetchall()
    tenants.execute("reset role")
    assert [i for i, _ in scores] == [i for i, _ in expected] == [i for i, _ in exact]
    assert [s for _, s in scores] == pytest.approx([s for _, s in expected], rel=1e-9)
    assert [s for _, s in scores] == pytest.approx([s for _, s in exact], rel=1e-9)
    # the index's corpus-wide statistics are not the tenant's to read
    as_tenant(tenants, "hs_tenant_a")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        tenants.execute("select to_bm25query('documents_fts_bm25_idx', %s)", [query])
    tenants.execute("reset role")


def test_monitoring_role_gets_its_functions_and_not_the_corpus(conn):
    """pg_monitor is given hybrid_search_backend_memory (and the loader it calls), never a
    level: the re-grant after an update read it as a 'search' role and gave every member
    of pg_monitor the documents, and then (as grant takes back what a level lacks) took
    its function away."""
    assert conn.execute(
        "select has_function_privilege('pg_monitor', 'hybrid_search_backend_memory()',"
        " 'execute'), has_table_privilege('pg_monitor', 'documents', 'select')"
    ).fetchone() == (True, False)
