"""Installing: setup is idempotent, the extension drops and re-creates cleanly."""

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers import connect, create_database, insert

CLI = Path(sys.executable).with_name("hybrid-search")


def test_setup_twice_changes_nothing_the_second_time():
    # make test ran `setup --test-model` just before; running it again must be a no-op
    result = subprocess.run(
        [CLI, "setup", "--test-model"], capture_output=True, text=True, check=True, timeout=600
    )
    steps = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert steps, result.stdout
    assert all(line.startswith("  ok ") for line in steps), result.stdout
    assert "postgresql-15-cron" in steps[0], steps[0]  # the queue's scheduler


def test_extension_drops_and_recreates_cleanly(cluster, layout, model_dir):
    dsn = create_database(cluster, layout, model_dir, "hybrid_search_recreate")
    with connect(dsn) as conn:
        insert(conn, "a row that goes away with the extension")
        conn.execute("drop extension hybrid_search")
        leftovers = conn.execute(
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public'"
            " and c.relname like any (array['documents%', 'hybrid_search%'])"
        ).fetchone()[0]
        assert leftovers == 0
        assert (
            conn.execute(
                "select count(*) from pg_proc where proname in ('hybrid_search', 'embed_dense')"
            ).fetchone()[0]
            == 0
        )
        conn.execute("create extension hybrid_search")  # vector and plpython3u are still there
        conn.execute("select hybrid_search_configure(python_venv => %s)", [str(layout.venv)])
        conn.execute("select hybrid_search_set_model(%s)", [str(model_dir)])
        insert(conn, "works again after re-creating")
        assert conn.execute("select count(*) from hybrid_search('works', 3)").fetchone()[0] == 1


def test_create_extension_without_dependencies_says_what_is_missing(cluster):
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as admin:
        admin.execute("drop database if exists hybrid_search_bare with (force)")
        admin.execute("create database hybrid_search_bare")
    missing = pytest.raises(psycopg.errors.UndefinedObject, match='required extension "vector"')
    with psycopg.connect(cluster.dsn("hybrid_search_bare"), autocommit=True) as conn, missing:
        conn.execute("create extension hybrid_search")


def test_unqualified_names_work_right_after_install(cluster, layout, model_dir):
    dsn = create_database(cluster, layout, model_dir, "hybrid_search_fresh")
    with connect(dsn) as conn:
        conn.execute("insert into documents (content) values ('fresh install, plain SQL')")
        assert (
            conn.execute("select count(*) from hybrid_search('plain SQL', 10)").fetchone()[0] == 1
        )


def test_every_public_function_is_documented(conn):
    undocumented = conn.execute(
        "select p.oid::regprocedure::text from pg_proc p"
        " join pg_depend d on d.objid = p.oid and d.deptype = 'e'"
        " join pg_extension e on e.oid = d.refobjid and e.extname = 'hybrid_search'"
        " where obj_description(p.oid, 'pg_proc') is null and p.proname not like '\\_%'"
    ).fetchall()
    assert undocumented == []


# the only functions that run with the owner's rights, none taking input from a caller:
# emptying the token statistics on TRUNCATE; the triggers that embed or queue the rows a
# statement wrote and copy enabled tables (writers may set only content and metadata); the
# event triggers that remember documents' policies and indexes for hybrid_search_restore and
# keep enabled tables' copies exact through DROP, partitions and renames
SECURITY_DEFINER = {
    "_index_truncated()",
    "_remember_documents_ddl()",
    "_query_cache_prune(bigint)",  # deletes every role's oldest cache entries, nothing else
    "_query_cache_count(boolean)",  # the cache's hit and miss counters
    "_documents_embed_inserted()",
    "_documents_embed_updated()",
    "_source_changed()",
    "_source_truncated()",
    "_documents_fulltext()",
    "_bm25query_shared(tsvector,double precision,double precision)",
    "_coordinator_fanout(text,name,text,jsonb)",  # shard rounds, for current_user only
    "_source_dropped()",
    "_source_altered()",
}


def test_every_function_pins_search_path(conn):
    rows = conn.execute(
        "select p.oid::regprocedure::text, p.prosecdef,"
        " coalesce(p.proconfig @> array['search_path=pg_catalog, pg_temp'], false)"
        " or p.prokind = 'a'"  # an aggregate takes no SET clause; its functions have one
        " from pg_proc p"
        " join pg_depend d on d.objid = p.oid and d.deptype = 'e'"
        " join pg_extension e on e.oid = d.refobjid and e.extname = 'hybrid_search'"
    ).fetchall()
    # a procedure with a SET clause cannot COMMIT: hybrid_search_worker qualifies every name;
    # the two C functions called once a row resolve no name, and a SET clause would
    # save and restore the settings at each call
    unpinned = sorted(name for name, _, pinned in rows if not pinned)
    assert unpinned == [
        "_bm25_visible_statistics_add(bigint[],tsvector,tsvector)",
        "bm25_distance(tsvector,bm25query)",
        "hybrid_search_worker(integer,integer,bigint,bigint)",
    ]
    assert {name for name, definer, _ in rows if definer} == SECURITY_DEFINER


def test_a_writer_keeps_the_indexes_without_rights_on_derived_data(db):
    db.execute("drop role if exists hs_writer")
    db.execute("create role hs_writer")
    try:
        db.execute("select hybrid_search_grant('hs_writer', 'write')")
        assert not db.execute(
            "select has_table_privilege('hs_writer', 'hybrid_search_token_stats',"
            " 'insert, update, delete, truncate')"
        ).fetchone()[0]
        db.execute("set role hs_writer")
        db.execute("insert into documents (content) values ('written by an application role')")
        db.execute("update documents set content = 'rewritten by it'")
        db.execute("insert into documents (content) values ('and another one')")
        db.execute("reset role")
        for index in ("documents_sparse_idx", "documents_fts_bm25_idx"):
            report = db.execute("select sparse_inverted_check(%s)", [index]).fetchone()[0]
            assert report["consistent"] and report["visible_rows"] == 2, report
    finally:
        db.execute("reset role")
        db.execute("drop owned by hs_writer")
        db.execute("drop role hs_writer")
