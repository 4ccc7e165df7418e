"""Application roles: hybrid_search_grant gives exactly what searching or writing
needs, and every boundary holds for real roles (SET ROLE on a live server)."""

import psycopg
import pytest
from helpers import insert
from psycopg import sql

# functions only the extension owner may run (everything else is for 'search'/'write')
OWNER_ONLY = {
    "hybrid_search_configure",
    "hybrid_search_set_model",
    "hybrid_search_create_dense_index",
    "hybrid_search_create_filter_indexes",
    "hybrid_search_drop_filter_indexes",
    "hybrid_search_filter_index_statements",
    "_filter_index_names",
    "_filter_index_statements",
    "hybrid_search_refresh",
    "hybrid_search_reembed",
    "hybrid_search_check",
    "sparse_inverted_check",  # reads every row of the table: owner only
    "sparse_inverted_handler",  # called by the server, needs no EXECUTE
    "dense_flat_check",  # reads every row of the table: owner only
    "dense_flat_handler",  # called by the server, needs no EXECUTE
    "_create_filter_operator_classes",  # the install script's: creates operator classes
    # an aggregate's transition: the server checks EXECUTE on it for the aggregate's
    # owner, not the caller, and it refuses any call but its aggregate's
    "_bm25_visible_statistics_add",
    "bm25query_in",  # type input: always refuses (a bm25query is made by to_bm25query)
    "hybrid_search_grant",
    # a coordinator's administration (docs/sharding.md)
    "hybrid_search_coordinator_create",
    "hybrid_search_coordinator_split",
    "hybrid_search_coordinator_prune",
    "_shard_schema",
    "_coordinator_partition",
    "_coordinator_check",  # hybrid_search_check's rows of the shards
    "hybrid_search_coordinator_tenant",
    # the fan-out, run as the owner by _coordinator_fanout only: no role reaches a
    # shard but through it (docs/sharding.md, "Tenants")
    "_coordinator_tenant",
    "_coordinator_route",
    "_shards_run",
    "_shards_send",
    "_shards_disconnect",
    "hybrid_search_restore",
    "_documents_ddl",
    "_remember_documents_ddl",
    "hybrid_search_revoke",
    "_role_functions",
    "_sparse_index_relations",
    "_revoke_relations",
    "_documents_fulltext",
    "_documents_embed_inserted",
    "_documents_embed_updated",
    "_index_truncated",
    "_token_stats_rows",  # the statistics view's query: every tenant's tokens
    "_queue_clear",
    "_queue_failed",
    "hybrid_search_process_queue",
    "hybrid_search_worker",
    "hybrid_search_backfill",
    "hybrid_search_retry_errors",
    "hybrid_search_enable",
    "hybrid_search_disable",
    "_source_changed",
    "_source_truncated",
    "hybrid_search_backend_memory",
    "_prepare_model_weights",
    "hybrid_search_query_cache_clear",
    # the triggers that call these run as the owner: writers need none of them
    "hybrid_search_embed_documents",
    "_embed_on_write",
    "_embeds_now",
    "_embed_and_store",
    "_embed_for_storage",
    "hybrid_search_enqueue",
    "_source_row_sql",
    "_source_type_trusted",
    "_source_value_sql",
    "_source_sync",
    "_source_create_triggers",
    "_source_drop_triggers",
    "_source_forget",
    "_source_reserved",
    "_source_dropped",
    "_source_altered",
}


@pytest.fixture
def role(db):
    """Creates roles on demand; drops them (and what was granted to them) afterwards."""
    made = []

    def make(name):
        db.execute(sql.SQL("create role {}").format(sql.Identifier(name)))
        made.append(name)
        return name

    yield make
    db.execute("reset role")
    for name in made:
        db.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def as_role(conn, name):
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(name)))


def denied(conn, statement, params=None):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement, params)


def extension_functions(conn):
    return {
        name
        for (name,) in conn.execute(
            "select p.proname from pg_proc p"
            " join pg_depend d on d.objid = p.oid and d.deptype = 'e'"
            " join pg_extension e on e.oid = d.refobjid and e.extname = 'hybrid_search'"
        )
    }


def test_every_function_is_classified_and_none_is_public(conn):
    search = set(conn.execute("select unnest(_role_functions('search'))::text").fetchall())
    write = set(conn.execute("select unnest(_role_functions('write'))::text").fetchall())
    granted = {name for (name,) in search | write}
    functions = extension_functions(conn)
    assert functions - granted - OWNER_ONLY == set()  # a new function must be classified
    assert granted <= functions  # and the lists name no function that does not exist
    public = conn.execute(
        "select p.oid::regprocedure::text from pg_proc p"
        " join pg_depend d on d.objid = p.oid and d.deptype = 'e'"
        " join pg_extension e on e.oid = d.refobjid and e.extname = 'hybrid_search'"
        # a NULL acl means the default: EXECUTE for PUBLIC
        " where p.proacl is null or exists (select from aclexplode(p.proacl) a where a.grantee = 0)"
    ).fetchall()
    assert public == []


def test_an_ungranted_role_can_do_nothing(db, role):
    insert(db, "secret document")
    as_role(db, role("hs_nobody"))
    denied(db, "select * from hybrid_search('secret', 5)")
    denied(db, "select embed_dense('text')")  # loading the model is not free for all
    denied(db, "select count(*) from documents")


def test_search_role_searches_and_does_nothing_else(db, role):
    insert(db, "vacuum reclaims dead tuples", "a replica replays WAL")
    db.execute("select hybrid_search_refresh()")
    name = role("hs_search")
    statements = db.execute("select * from hybrid_search_grant(%s, 'search')", [name]).fetchall()
    assert statements and not any("insert" in s for (s,) in statements)
    as_role(db, name)
    assert len(db.execute("select * from hybrid_search('vacuum', 5)").fetchall()) == 2
    for leg in ("dense_search", "sparse_search", "keyword_search"):
        assert db.execute(f"select count(*) from {leg}('vacuum', 5)").fetchone()[0] >= 1
    assert db.execute("select count(*) from sparse_explain('vacuum')").fetchone()[0] >= 1
    assert db.execute("select count(*) from embed_batch(array['a', 'b'])").fetchone()[0] == 2

    denied(db, "insert into documents (content) values ('not allowed')")
    denied(db, "update documents set metadata = '{}'")
    denied(db, "delete from documents")
    assert_owner_only(db)


def assert_owner_only(conn):
    """What neither application role may do: settings, model path, files, code, rebuilds."""
    denied(conn, "update hybrid_search_config set model = '/etc'")
    denied(conn, "insert into hybrid_search_config (model) values ('/etc')")
    denied(conn, "select hybrid_search_set_model('/etc')")
    denied(conn, "select hybrid_search_configure(python_venv => '/tmp/evil')")
    denied(conn, "select hybrid_search_refresh()")
    denied(conn, "select hybrid_search_reembed()")
    denied(conn, "select hybrid_search_create_dense_index('none')")
    denied(conn, "select hybrid_search_create_filter_indexes('t3', '{\"tenant\": 3}')")
    denied(conn, "select hybrid_search_drop_filter_indexes('t3')")
    denied(conn, "select * from hybrid_search_check()")
    denied(conn, "select hybrid_search_grant(current_user::regrole, 'write')")
    denied(conn, "select pg_read_file('/etc/passwd')")
    denied(conn, "truncate documents")
    denied(conn, "delete from hybrid_search_token_stats")
    denied(conn, "create function public.f() returns int language sql as 'select 1'")
    denied(conn, "create function pg_temp.f() returns int language plpython3u as 'return 1'")
    denied(conn, "create table public.t (i int)")
    denied(conn, "alter table documents disable row level security")
    assert conn.execute("select current_setting('is_superuser')").fetchone()[0] == "off"


def test_write_role_writes_and_embeds(db, role):
    name = role("hs_write")
    db.execute("select hybrid_search_grant(%s, 'write')", [name])
    as_role(db, name)
    (doc_id,) = insert(db, "written by the application")
    db.execute("update documents set content = 'rewritten about vacuum' where id = %s", [doc_id])
    dense, embedded = db.execute(
        "select dense is not null, embedded_at is not null from documents where id = %s",
        [doc_id],
    ).fetchone()
    assert dense and embedded
    assert db.execute("select id from hybrid_search('vacuum', 1)").fetchone()[0] == doc_id
    db.execute("delete from documents where id = %s", [doc_id])
    assert_owner_only(db)
    db.execute("reset role")
    # the indexes kept up although the role has no right but on documents
    for index in ("documents_sparse_idx", "documents_fts_bm25_idx"):
        report = db.execute("select sparse_inverted_check(%s)", [index]).fetchone()[0]
        assert report["consistent"], report


def test_revoke_takes_everything_back(db, role):
    name = role("hs_gone")
    db.execute("select hybrid_search_grant(%s, 'write')", [name])
    db.execute("select hybrid_search_revoke(%s)", [name])
    as_role(db, name)
    denied(db, "select * from hybrid_search('anything', 5)")
    denied(db, "insert into documents (content) values ('no')")


def test_hostile_role_name_is_quoted(db, role):
    insert(db, "still here")
    name = role('x"; DROP TABLE documents; --')
    quoted = sql.Identifier(name).as_string(db)  # regrole input takes a quoted name
    granted = db.execute("select * from hybrid_search_grant(%s, 'search')", [quoted]).fetchall()
    assert all('"x""; DROP TABLE documents; --"' in s for (s,) in granted)
    as_role(db, name)
    assert db.execute("select count(*) from documents").fetchone()[0] == 1


@pytest.mark.parametrize(
    "role_name, access, error",
    [
        ("no_such_role", "search", psycopg.errors.UndefinedObject),
        ("postgres", "admin", psycopg.errors.InvalidParameterValue),
        ("postgres", None, psycopg.errors.InvalidParameterValue),
    ],
)
def test_grant_rejects_bad_arguments(db, role_name, access, error):
    with pytest.raises(error):
        db.execute("select hybrid_search_grant(%s, %s)", [role_name, access])
