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


def copies(conn, source):
    return conn.execute(
        "select source_key, content from documents where source = %s order by source_key",
        [source],
    ).fetchall()


def assert_clean(conn):
    assert [r for r in conn.execute("select * from hybrid_search_check()") if r[1] == "error"] == []


@pytest.fixture
def parted(db):
    """A partitioned table with a sub-partitioned partition, enabled in sync mode."""
    db.execute("drop table if exists public.hs_parted, public.hs_loose cascade")
    db.execute(
        "create table public.hs_parted (id int primary key, body text) partition by range (id)"
    )
    db.execute(
        "create table public.hs_p1 partition of public.hs_parted for values from (0) to (100)"
    )
    db.execute(
        "create table public.hs_p2 partition of public.hs_parted for values from (100) to (200)"
        " partition by range (id)"
    )
    db.execute(
        "create table public.hs_p2a partition of public.hs_p2 for values from (100) to (150)"
    )
    db.execute("insert into public.hs_parted values (1, 'one'), (120, 'one twenty')")
    db.execute("truncate hybrid_search_sources")
    db.execute("select hybrid_search_enable('public.hs_parted', 'body', mode => 'sync')")
    yield db
    db.execute("drop table if exists public.hs_parted, public.hs_loose cascade")


def test_writes_straight_to_a_partition_are_copied(parted):
    # defect 7: partitions had no triggers, so these writes were never copied
    source = "public.hs_parted"
    parted.execute("insert into public.hs_p1 values (2, 'two')")
    parted.execute("insert into public.hs_p2a values (130, 'one thirty')")
    parted.execute("update public.hs_p1 set body = 'one, rewritten' where id = 1")
    parted.execute("delete from public.hs_p2a where id = 120")
    assert copies(parted, source) == [("1", "one, rewritten"), ("130", "one thirty"), ("2", "two")]
    parted.execute("truncate public.hs_p2a")
    assert copies(parted, source) == [("1", "one, rewritten"), ("2", "two")]
    # written through the parent: one copy each, as before
    parted.execute("insert into public.hs_parted values (3, 'three'), (140, 'one forty')")
    assert len(copies(parted, source)) == 4
    assert parted.execute(
        f"select count(*) from documents where source = '{source}' and dense is null"
    ).fetchone() == (0,)
    assert_clean(parted)
    assert parted.execute("select hybrid_search_disable(%s)", [source]).fetchone() == (4,)
    assert parted.execute(
        "select count(*) from pg_trigger where tgname like 'hybrid_search%%'"
    ).fetchone() == (0,)


def test_partitions_created_attached_detached_and_dropped_keep_the_copy_exact(parted):
    source = "public.hs_parted"
    parted.execute(
        "create table public.hs_p3 partition of public.hs_parted for values from (200) to (300)"
    )
    parted.execute("insert into public.hs_p3 values (201, 'in a new partition')")
    parted.execute("create table public.hs_loose (id int primary key, body text)")
    parted.execute("insert into public.hs_loose values (301, 'attached with its rows')")
    parted.execute(
        "alter table public.hs_parted attach partition public.hs_loose"
        " for values from (300) to (400)"
    )
    assert [k for k, _ in copies(parted, source)] == ["1", "120", "201", "301"]
    parted.execute("call hybrid_search_worker()")  # attached rows are queued, like enable's
    parted.execute("alter table public.hs_parted detach partition public.hs_p3")
    parted.execute("insert into public.hs_p3 values (202, 'detached: not searchable')")
    parted.execute("drop table public.hs_p1")
    assert [k for k, _ in copies(parted, source)] == ["120", "301"]
    assert_clean(parted)
    parted.execute("drop table public.hs_p3")


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Kolkata"])
def test_timestamptz_keys_do_not_depend_on_the_sessions_time_zone(db, zone):
    # defect 7: keys were compared as text rendered in the session's TimeZone
    db.execute("drop table if exists public.hs_events")
    db.execute("create table public.hs_events (at timestamptz primary key, body text)")
    db.execute("truncate hybrid_search_sources")
    db.execute("select hybrid_search_enable('public.hs_events', 'body', mode => 'sync')")
    try:
        db.execute("set timezone = 'Europe/Berlin'")
        db.execute("set datestyle = 'SQL, DMY'")
        db.execute("insert into public.hs_events values ('2026-03-01 12:00+01', 'an event')")
        db.execute(f"set timezone = '{zone}'")
        db.execute("reset datestyle")
        db.execute("update public.hs_events set body = 'the event, rewritten'")
        assert copies(db, "public.hs_events") == [
            ("2026-03-01 11:00:00+00", "the event, rewritten")
        ]
        db.execute("delete from public.hs_events")
        assert copies(db, "public.hs_events") == []
    finally:
        db.execute("reset timezone")
        db.execute("reset datestyle")
        db.execute("drop table public.hs_events")


def test_dropping_an_enabled_table_removes_its_copies(tickets):
    # defect 7: the rows stayed searchable and enable/disable failed afterwards
    tickets.execute("select hybrid_search_enable(%s, %s)", [TABLE, CONTENT])
    tickets.execute(f"drop table {TABLE}")
    assert source_docs(tickets) == []
    assert tickets.execute("select count(*) from hybrid_search_sources").fetchone() == (0,)
    assert tickets.execute("select count(*) from hybrid_search_queue").fetchone() == (0,)
    tickets.execute(f'create table {TABLE} (id int primary key, "{CONTENT}" text)')
    tickets.execute(f"insert into {TABLE} values (7, 'a new table of the same name')")
    assert tickets.execute("select hybrid_search_enable(%s, %s)", [TABLE, CONTENT]).fetchone() == (
        1,
    )
    tickets.execute(f"drop schema {SCHEMA} cascade")  # with the schema, likewise
    assert source_docs(tickets) == []
    tickets.execute(f"create schema {SCHEMA}")
    assert_clean(tickets)


@pytest.mark.parametrize(
    "ddl",
    [
        f"alter table {TABLE} set schema public",
        f'alter table {TABLE} rename to "Renamed"',
        f"alter schema {SCHEMA} rename to hs_renamed_schema",
        f'alter table {TABLE} rename column "{CONTENT}" to body',
        f"alter table {TABLE} drop column note",
        f"alter table {TABLE} drop constraint " + '"Tickets ""2026""_pkey"',
    ],
)
def test_ddl_that_would_break_the_copy_is_refused(tickets, ddl):
    # defect 7: SET SCHEMA broke every later write with "query returned no rows"
    tickets.execute(
        "select hybrid_search_enable(%s, %s, metadata_columns => '{note}')", [TABLE, CONTENT]
    )
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="hybrid_search_disable"):
        tickets.execute(ddl)
    tickets.execute(f"insert into {TABLE} values (8, 'still copied', 1, 'h')")
    assert source_docs(tickets)[-1][:2] == ("8", "still copied")
    # what does not touch the key, content or metadata columns is allowed
    tickets.execute(f"alter table {TABLE} add column extra int")
    assert_clean(tickets)


def test_temporary_tables_cannot_be_enabled(db):
    db.execute("create temporary table hs_temp (id int primary key, body text)")
    try:
        with pytest.raises(psycopg.errors.WrongObjectType, match="temporary"):
            db.execute("select hybrid_search_enable('hs_temp', 'body')")
    finally:
        db.execute("drop table hs_temp")


@pytest.fixture
def app_owner(db):
    """A table owner who is not a superuser, with a schema of its own."""
    db.execute("drop schema if exists hs_app cascade")
    db.execute("drop role if exists hs_app_owner")
    db.execute("create role hs_app_owner")
    db.execute("create schema hs_app authorization hs_app_owner")
    yield db
    db.execute("reset role")
    db.execute("drop schema hs_app cascade")
    db.execute("drop owned by hs_app_owner")
    db.execute("drop role hs_app_owner")


def test_a_table_owners_casts_never_run_with_the_copy_triggers_rights(app_owner):
    """The copy triggers run as the extension owner: a cast the table's owner wrote for
    its own type (which ::text or to_jsonb would call) must not run there, or the table
    owner could act as a superuser. Such values are copied as their output's text."""
    db = app_owner
    db.execute("set role hs_app_owner")
    db.execute("create type hs_app.mood as enum ('calm', 'angry')")
    for target in ("text", "json"):
        db.execute(
            f"create function hs_app.to_{target}(m hs_app.mood) returns {target}"
            " language plpgsql as $$ begin"
            " execute 'alter role hs_app_owner superuser';"
            f" return '\"escalated\"'::{target}; end $$"
        )
        db.execute(
            f"create cast (hs_app.mood as {target}) with function hs_app.to_{target}(hs_app.mood)"
        )
    db.execute("create table hs_app.t (k hs_app.mood primary key, body text, m hs_app.mood)")
    db.execute("reset role")
    db.execute("truncate hybrid_search_sources")
    db.execute("select hybrid_search_enable('hs_app.t', 'body', mode => 'sync')")
    db.execute("set role hs_app_owner")
    db.execute("insert into hs_app.t values ('calm', 'a calm row', 'angry')")
    db.execute("update hs_app.t set body = 'still calm'")
    db.execute("reset role")
    assert db.execute(
        "select rolsuper from pg_roles where rolname = 'hs_app_owner'"
    ).fetchone() == (False,)
    assert db.execute(
        "select source_key, metadata->>'m', content from documents where source = 'hs_app.t'"
    ).fetchall() == [("calm", "angry", "still calm")]
    db.execute("set role hs_app_owner")
    db.execute("delete from hs_app.t")
    db.execute("reset role")
    assert db.execute("select count(*) from documents where source = 'hs_app.t'").fetchone() == (0,)
    db.execute("select hybrid_search_disable('hs_app.t')")
