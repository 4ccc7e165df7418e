"""hybrid_search_enable / hybrid_search_disable: any table made searchable."""

import psycopg
import pytest

# a legal name that breaks any SQL built by concatenation
SCHEMA = '"my app"'
TABLE = f'{SCHEMA}."Tickets ""2026"""'
CONTENT = "Body Text"


@pytest.fixture
def tickets(db):
    db.execute(f"drop schema if exists {SCHEMA} cascade")
    db.execute(f"create schema {SCHEMA}")
    db.execute(
        f'create table {TABLE} (id int primary key, "{CONTENT}" text, tenant int, note text)'
    )
    db.execute(
        f"insert into {TABLE} values (1, 'vacuum reclaims dead tuples', 1, 'a'),"
        " (2, 'streaming replication sends WAL to a standby', 2, 'b'), (3, null, 1, 'c')"
    )
    db.execute("truncate hybrid_search_sources")
    yield db
    if db.execute("select count(*) from hybrid_search_sources").fetchone()[0]:
        db.execute("select hybrid_search_disable(%s)", [TABLE])
    db.execute(f"drop schema {SCHEMA} cascade")


def source_docs(conn):
    return conn.execute(
        "select source_key, content, metadata, dense is not null from documents"
        " where source is not null order by source_key"
    ).fetchall()


def triggers(conn):
    return conn.execute(
        "select count(*) from pg_trigger where tgrelid = %s::regclass and tgname like 'hybrid%%'",
        [TABLE],
    ).fetchone()[0]


def test_enable_queues_existing_rows_and_search_finds_them(tickets):
    tickets.execute("insert into documents (content) values ('a native document about vacuum')")
    assert tickets.execute("select hybrid_search_enable(%s, %s)", [TABLE, CONTENT]).fetchone() == (
        2,
    )
    docs = source_docs(tickets)
    assert [(d[0], d[1], d[3]) for d in docs] == [
        ("1", "vacuum reclaims dead tuples", False),
        ("2", "streaming replication sends WAL to a standby", False),
    ]
    assert docs[0][2] == {"id": 1, "tenant": 1, "note": "a", "_source": f"{TABLE}"}
    assert tickets.execute("select count(*) from hybrid_search_queue").fetchone() == (2,)
    tickets.execute("call hybrid_search_worker()")
    assert all(d[3] for d in source_docs(tickets))

    found = tickets.execute(
        "select metadata->>'id', metadata->>'_source'"
        " from hybrid_search('vacuum', 10, source => %s)",
        [TABLE],
    ).fetchall()
    assert ("1", TABLE) in found and all(f[1] == TABLE for f in found)
    everything = tickets.execute("select count(*) from hybrid_search('vacuum', 10)").fetchone()[0]
    assert everything > len(found)  # without source: the native document too
    filtered = tickets.execute(
        "select metadata->>'id' from hybrid_search('replication', 10, source => %s,"
        " filter => '{\"tenant\": 2}')",
        [TABLE],
    ).fetchall()
    assert filtered == [("2",)]


def test_sync_mode_follows_every_kind_of_write(tickets):
    tickets.execute("select hybrid_search_enable(%s, %s, mode => 'sync')", [TABLE, CONTENT])
    tickets.execute("call hybrid_search_worker()")
    tickets.execute(f"insert into {TABLE} values (4, 'checkpoints flush dirty pages', 2, 'd')")
    assert source_docs(tickets)[-1][0::3] == ("4", True)  # embedded in the writing transaction
    before = tickets.execute("select dense::text from documents where source_key = '4'").fetchone()
    tickets.execute(f"update {TABLE} set note = 'changed' where id = 4")
    after = tickets.execute(
        "select dense::text, metadata->>'note' from documents where source_key = '4'"
    ).fetchone()
    assert after == (before[0], "changed")  # metadata only: no new embedding
    tickets.execute(f"update {TABLE} set \"{CONTENT}\" = 'bgwriter writes pages' where id = 4")
    assert tickets.execute(
        "select content, dense::text <> %s from documents where source_key = '4'", [before[0]]
    ).fetchone() == ("bgwriter writes pages", True)
    tickets.execute(f"update {TABLE} set id = 40 where id = 4")  # the key changed
    tickets.execute(f'update {TABLE} set "{CONTENT}" = null where id = 2')  # nothing to embed
    tickets.execute(f"update {TABLE} set \"{CONTENT}\" = 'now it has text' where id = 3")
    assert [d[0] for d in source_docs(tickets)] == ["1", "3", "40"]
    tickets.execute(f"delete from {TABLE} where id = 1")
    assert [d[0] for d in source_docs(tickets)] == ["3", "40"]
    tickets.execute(f"truncate {TABLE}")
    assert source_docs(tickets) == []


def test_disable_removes_everything_enable_added(tickets):
    tickets.execute(
        "select hybrid_search_enable(%s, %s, metadata_columns => '{tenant}')", [TABLE, CONTENT]
    )
    assert source_docs(tickets)[0][2] == {"tenant": 1, "_source": TABLE}
    assert triggers(tickets) == 4
    assert tickets.execute("select hybrid_search_disable(%s)", [TABLE]).fetchone() == (2,)
    assert triggers(tickets) == 0
    assert source_docs(tickets) == []
    assert tickets.execute("select count(*) from hybrid_search_queue").fetchone() == (0,)
    assert tickets.execute(f"select count(*) from {TABLE}").fetchone() == (3,)  # untouched
    tickets.execute(f"insert into {TABLE} values (5, 'written after disable', 1, 'e')")
    assert source_docs(tickets) == []
    with pytest.raises(psycopg.errors.UndefinedObject, match="not enabled"):
        tickets.execute("select * from hybrid_search('vacuum', 10, source => %s)", [TABLE])


@pytest.mark.parametrize(
    ("table", "column", "error"),
    [
        ('x"; DROP TABLE documents; --', CONTENT, psycopg.errors.InvalidName),
        ("documents; drop table documents", CONTENT, psycopg.errors.InvalidName),
        (TABLE, 'Body Text"; DROP TABLE documents; --', psycopg.errors.UndefinedColumn),
        (TABLE, "tenant", psycopg.errors.UndefinedColumn),  # not text
        ("pg_catalog.pg_class_oid_index", "relname", psycopg.errors.WrongObjectType),
    ],
)
def test_bad_tables_and_columns_fail_cleanly(tickets, table, column, error):
    with pytest.raises((error, psycopg.errors.UndefinedTable)):
        tickets.execute("select hybrid_search_enable(%s, %s)", [table, column])
    assert tickets.execute("select count(*) from documents").fetchone()[0] == 0
    assert tickets.execute("select to_regclass('documents') is not null").fetchone()[0]
    assert tickets.execute("select count(*) from hybrid_search_sources").fetchone() == (0,)


def test_tables_enable_needs_a_single_column_key_and_enables_once(tickets):
    tickets.execute(f"create table {SCHEMA}.nokey (body text)")
    with pytest.raises(psycopg.errors.InvalidTableDefinition, match="primary key"):
        tickets.execute("select hybrid_search_enable(%s, 'body')", [f"{SCHEMA}.nokey"])
    tickets.execute("select hybrid_search_enable(%s, %s)", [TABLE, CONTENT])
    with pytest.raises(psycopg.errors.DuplicateObject, match="already enabled"):
        tickets.execute("select hybrid_search_enable(%s, %s)", [TABLE, CONTENT])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="mode"):
        tickets.execute(
            "select hybrid_search_enable(%s, 'body', mode => 'later')", [f"{SCHEMA}.nokey"]
        )
    tickets.execute(f"create table {SCHEMA}.other (id int primary key, body text)")
    with pytest.raises(psycopg.errors.UndefinedColumn, match="nope"):
        tickets.execute(
            "select hybrid_search_enable(%s, 'body', metadata_columns => '{nope}')",
            [f"{SCHEMA}.other"],
        )
