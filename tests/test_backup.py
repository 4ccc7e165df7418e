"""pg_dump / pg_restore of a database using the extension: the rows, vectors and
grants come back as they were, search works at once, and
hybrid_search_restore() brings back the indexes without embedding anything."""

import subprocess

import pytest
from helpers import connect, create_database, insert
from hybrid_search_installer import database
from hybrid_search_installer.layout import pg_bin

ROW = "select id, content, metadata, dense::text, sparse::text, model, embedded_at from documents"
QUERIES = ["vacuum dead tuples", "replica", "index 7"]
# what pg_dump does not keep of documents: indexes, row-level security, policies
DDL = (
    "select c.relname, pg_get_indexdef(i.indexrelid) from pg_index i"
    " join pg_class c on c.oid = i.indexrelid"
    " where i.indrelid = 'documents'::regclass and c.relname like any"
    " (array['documents_dense_idx', 'documents_embedded_at_idx'])"
    " union all select 'rls', relrowsecurity::text from pg_class where oid = 'documents'::regclass"
    " union all select polname,"
    " pg_get_expr(polqual, polrelid) || array_to_string(polroles::regrole[], ',') from pg_policy"
    " where polrelid = 'documents'::regclass order by 1"
)


def results(conn, function="hybrid_search"):
    return {
        q: conn.execute(f"select id, score from {function}(%s, 10)", [q]).fetchall()
        for q in QUERIES
    }


def assert_same_results(got, expected):
    for query in QUERIES:
        assert [r[0] for r in got[query]] == [r[0] for r in expected[query]], query
        assert [r[1] for r in got[query]] == pytest.approx([r[1] for r in expected[query]])


def statuses(conn):
    return {n: s for n, s, _ in conn.execute("select * from hybrid_search_check()").fetchall()}


@pytest.fixture
def reader_role(conn):
    conn.execute("create role hs_dump_reader")
    yield "hs_dump_reader"
    # the role's grants go with the databases
    for (name,) in conn.execute(
        "select datname from pg_database where datname like 'hybrid_search_dump_%'"
    ).fetchall():
        conn.execute(f"drop database {name} with (force)")
    conn.execute("drop role hs_dump_reader")


@pytest.mark.parametrize("dense_method", ["hnsw_halfvec", "graph"])
def test_dump_and_restore_keep_vectors_and_search(
    cluster, layout, model_dir, scratch, reader_role, dense_method
):
    source = create_database(cluster, layout, model_dir, f"hybrid_search_dump_src_{dense_method}")
    with connect(source) as src:
        src.execute("select hybrid_search_configure(text_search_config => 'simple')")
        insert(src, *[f"index {i} about vacuum dead tuples" for i in range(30)], metadata={"a": 1})
        insert(src, "a streaming replica replays WAL")
        src.execute("select hybrid_search_refresh()")
        src.execute(f"select hybrid_search_create_dense_index('{dense_method}', m => 8)")
        src.execute("create index documents_embedded_at_idx on documents (embedded_at)")
        src.execute("alter table documents enable row level security")
        src.execute(
            "create policy only_a on documents for select to hs_dump_reader"
            " using (metadata @> '{\"a\": 1}')"
        )
        src.execute("select hybrid_search_grant('hs_dump_reader', 'search')")
        ddl = src.execute(DDL).fetchall()
        assert len(ddl) == 4  # two indexes, the switch, the policy
        rows, found = src.execute(ROW + " order by id").fetchall(), results(src)
        legs = {leg: results(src, leg) for leg in ("dense_search", "sparse_search")}
        keyword = results(src, "keyword_search")
    dump = scratch / f"hybrid_search_{dense_method}.dump"
    subprocess.run([pg_bin() / "pg_dump", "-Fc", "-f", dump, "-d", source], check=True)

    database.recreate_database(cluster.dsn("postgres"), f"hybrid_search_dump_dst_{dense_method}")
    target = cluster.dsn(f"hybrid_search_dump_dst_{dense_method}")
    subprocess.run(
        [pg_bin() / "pg_restore", "--exit-on-error", "-d", target, dump],
        check=True,
        capture_output=True,
    )
    with connect(target) as dst:
        assert dst.execute(ROW + " order by id").fetchall() == rows  # not re-embedded
        assert dst.execute(
            "select has_function_privilege('hs_dump_reader', 'hybrid_search(text, integer, text,"
            " float8, float8, float8, integer, jsonb, integer, integer, regclass, integer,"
            " float8)', 'execute')"
        ).fetchone()[0]
        # the vector legs work straight away (exact scans), with the same results
        for leg, expected in legs.items():
            assert_same_results(results(dst, leg), expected)
        before = statuses(dst)
        assert before["dense_index"] == "warning"
        assert before["sparse_access_method"] == "ok"  # created with the table, filled by COPY
        # pg_restore loads documents before hybrid_search_config, so the fts trigger
        # used the default configuration, not the 'simple' one of the source
        assert before["fts"] == "error"

        assert dst.execute(DDL).fetchall() != ddl  # lost by pg_dump
        done = [line for (line,) in dst.execute("select * from hybrid_search_restore()")]
        assert any("sized" in line for line in done)
        assert any(line.startswith("fts rewritten for 31 rows: run VACUUM") for line in done)
        assert any("create policy only_a" in line.lower() for line in done)
        assert dst.execute(DDL).fetchall() == ddl  # and brought back
        # a graph serves filters: the extension script's documents_dense_filter_idx goes
        filter_index = "select to_regclass('documents_dense_filter_idx') is not null"
        assert dst.execute(filter_index).fetchone()[0] == (dense_method != "graph")
        assert dst.execute("select * from hybrid_search_restore()").fetchall() == [
            ("hybrid_search_token_stats refreshed",)
        ]  # a second run has nothing left to re-create
        dst.execute("vacuum documents")  # as the restore asked: BM25 drops the old versions
        assert_same_results(results(dst, "keyword_search"), keyword)
        dst.execute("set role hs_dump_reader")
        assert dst.execute("select count(*) from documents").fetchone()[0] == 30
        assert {r[0] for r in dst.execute("select id from hybrid_search('replica', 40)")} <= {
            r[0] for r in rows[:30]
        }
        dst.execute("reset role")
        assert {s for s in statuses(dst).values()} == {"ok"}
        assert dst.execute(ROW + " order by id").fetchall() == rows
        assert_same_results(results(dst), found)
        # the only texts this backend embedded are the queries, each once per role (the
        # per-backend query cache serves a role's repeats; 'replica' ran as hs_dump_reader
        # too): no document was
        texts = dst.execute("select texts_encoded from hybrid_search_model_stats()").fetchone()[0]
        assert texts == len(QUERIES) + 1


def test_any_role_may_still_drop_its_own_index_and_policy(db):
    """The event trigger that remembers documents' DDL must not get in anyone's way."""
    db.execute("create role hs_ddl_user")
    try:
        db.execute("create schema hs_ddl authorization hs_ddl_user")
        db.execute("set role hs_ddl_user")
        db.execute("create table hs_ddl.t (i int)")
        db.execute("create index t_i on hs_ddl.t (i)")
        db.execute("create policy p on hs_ddl.t using (i > 0)")
        db.execute("drop policy p on hs_ddl.t")
        db.execute("drop index hs_ddl.t_i")
        db.execute("reset role")
        # nothing about documents changed, so nothing was remembered for it
        assert db.execute("select count(*) from hybrid_search_documents_ddl").fetchone()[0] == 1
    finally:
        db.execute("reset role")
        db.execute("drop schema if exists hs_ddl cascade")
        db.execute("drop role hs_ddl_user")
