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
    conn.execute("drop database if exists hybrid_search_dump_src with (force)")
    conn.execute("drop database if exists hybrid_search_dump_dst with (force)")
    conn.execute("drop role hs_dump_reader")


def test_dump_and_restore_keep_vectors_and_search(cluster, layout, model_dir, scratch, reader_role):
    source = create_database(cluster, layout, model_dir, "hybrid_search_dump_src")
    with connect(source) as src:
        src.execute("select hybrid_search_configure(text_search_config => 'simple')")
        insert(src, *[f"index {i} about vacuum dead tuples" for i in range(30)], metadata={"a": 1})
        insert(src, "a streaming replica replays WAL")
        src.execute("select hybrid_search_refresh()")
        src.execute("select hybrid_search_grant('hs_dump_reader', 'search')")
        rows, found = src.execute(ROW + " order by id").fetchall(), results(src)
        legs = {leg: results(src, leg) for leg in ("dense_search", "sparse_search")}
    dump = scratch / "hybrid_search.dump"
    subprocess.run([pg_bin() / "pg_dump", "-Fc", "-f", dump, "-d", source], check=True)

    database.recreate_database(cluster.dsn("postgres"), "hybrid_search_dump_dst")
    target = cluster.dsn("hybrid_search_dump_dst")
    subprocess.run(
        [pg_bin() / "pg_restore", "--exit-on-error", "-d", target, dump],
        check=True,
        capture_output=True,
    )
    with connect(target) as dst:
        assert dst.execute(ROW + " order by id").fetchall() == rows  # not re-embedded
        assert dst.execute(
            "select has_function_privilege('hs_dump_reader', 'hybrid_search(text, integer, text,"
            " float8, float8, float8, integer, jsonb, integer, integer)', 'execute')"
        ).fetchone()[0]
        # the vector legs work straight away (exact scans), with the same results
        for leg, expected in legs.items():
            assert_same_results(results(dst, leg), expected)
        before = statuses(dst)
        assert before["sparse_index"] == "warning" and before["dense_index"] == "warning"
        # pg_restore loads documents before hybrid_search_config, so the fts trigger
        # used the default configuration, not the 'simple' one of the source
        assert before["fts"] == "error"

        done = [line for (line,) in dst.execute("select * from hybrid_search_restore()")]
        assert any("sized" in line for line in done) and any("dense index" in line for line in done)
        assert {s for s in statuses(dst).values()} == {"ok"}
        assert dst.execute(ROW + " order by id").fetchall() == rows
        assert_same_results(results(dst), found)
        # the only texts this backend embedded are the queries: no document was
        texts = dst.execute("select texts_encoded from hybrid_search_model_stats()").fetchone()[0]
        assert texts == 3 * len(QUERIES)
