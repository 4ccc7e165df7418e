"""Adversarial: every table, column and sequence a `search` or `write` role can reach,
written with hostile values (issue 13). The reachable set is read from the catalog, so a
new table or grant is covered without editing this file: it must equal docs/security.md's
privilege map, and each write a role may make must leave every backend alive and
hybrid_search_check() without an error."""

import contextlib
import json

import psycopg
import pytest
from helpers import connect
from psycopg import sql

ROLES = {"hs_adv_search": "search", "hs_adv_write": "write"}

# docs/security.md's privilege map, table by table: (relation, privilege, column or None)
PUBLIC_READ = {
    ("hybrid_search_config", "SELECT", None),
    ("hybrid_search_settings", "SELECT", None),
    ("hybrid_search_sources", "SELECT", None),
    # every search asks whether the database is a coordinator, and which shards to ask
    ("hybrid_search_coordinator", "SELECT", None),
    ("hybrid_search_shards", "SELECT", None),
}
# the shared query cache: every role reads and adds rows, row-level security shows it its
# own only (tests/test_query_cache.py); the statistics view shows aggregates
QUERY_CACHE = {
    ("hybrid_search_query_cache", "SELECT", None),
    ("hybrid_search_query_cache", "INSERT", None),
    ("hybrid_search_query_cache_stats", "SELECT", None),
}
INDEX_READ = {
    (relation, "SELECT", None)
    for relation in [
        "hybrid_search_token_stats",
    ]
}
WRITE = {
    ("documents", "DELETE", None),
    ("documents", "INSERT", "content"),
    ("documents", "INSERT", "metadata"),
    ("documents", "UPDATE", "content"),
    ("documents", "UPDATE", "metadata"),
}
TABLE_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]


def expected(level, rls):
    reachable = PUBLIC_READ | QUERY_CACHE | {("documents", "SELECT", None)}
    if not rls:
        reachable |= INDEX_READ
    if level == "write":
        reachable |= WRITE
    return reachable


def reachable(conn, role):
    """(relation, privilege, column) the role holds on the extension's relations: a
    column appears only where the role holds the privilege on some columns, not all."""
    rows = conn.execute(
        "select c.relname, p.priv, a.attname, has_table_privilege(%(r)s, c.oid, p.priv),"
        " p.priv in ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')"
        "  and has_column_privilege(%(r)s, c.oid, a.attnum, p.priv)"
        " from pg_class c"
        " join pg_depend d on d.objid = c.oid and d.classid = 'pg_class'::regclass"
        "  and d.deptype = 'e'"
        " join pg_extension e on e.oid = d.refobjid and e.extname = 'hybrid_search'"
        " cross join unnest(%(p)s::text[]) as p (priv)"
        " join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
        " where c.relkind in ('r', 'v', 'm', 'p')",
        {"r": role, "p": TABLE_PRIVILEGES},
    ).fetchall()
    held = set()
    for relation, privilege, column, table_level, column_level in rows:
        if table_level:
            held.add((relation, privilege, None))
        elif column_level:
            held.add((relation, privilege, column))
    return held


@pytest.fixture(params=[False, True], ids=["no-rls", "tenant-policy"])
def adversary(request, db, dsn):
    """Both levels granted, with or without the README's tenant policy; a watcher
    connection held open across each case tells whether any backend crashed."""
    rls = request.param
    db.execute("truncate hybrid_search_queue, hybrid_search_errors")
    db.execute("insert into documents (content, metadata) values ('the owner''s row', '{}')")
    if rls:
        db.execute("alter table documents enable row level security")
        db.execute(
            "create policy tenant_rows on documents"
            " using (metadata->>'tenant' = current_user)"
            " with check (metadata->>'tenant' = current_user)"
        )
    for role, level in ROLES.items():
        db.execute(f"drop role if exists {role}")
        db.execute(f"create role {role}")
        db.execute("select hybrid_search_grant(%s, %s)", [role, level])
    watcher = connect(dsn)
    checkpointer = checkpointer_pid(db)
    yield db, rls, watcher, checkpointer
    watcher.close()
    db.execute("reset role")
    if rls:
        db.execute("drop policy tenant_rows on documents")
        db.execute("alter table documents disable row level security")
    for role in ROLES:
        db.execute(f"drop owned by {role}")
        db.execute(f"drop role {role}")


def checkpointer_pid(conn):
    return conn.execute(
        "select pid from pg_stat_activity where backend_type = 'checkpointer'"
    ).fetchone()[0]


def survived(conn, watcher, checkpointer):
    """No backend crashed (a crash restarts every process and cuts every connection),
    and the derived data are consistent."""
    conn.execute("reset role")
    assert watcher.execute("select 1").fetchone() == (1,)
    assert checkpointer_pid(conn) == checkpointer
    errors = [r for r in conn.execute("select * from hybrid_search_check()") if r[1] == "error"]
    assert errors == []


@pytest.mark.parametrize("role", sorted(ROLES))
def test_what_a_role_can_reach_is_the_privilege_map(adversary, role):
    conn, rls, watcher, checkpointer = adversary
    assert reachable(conn, role) == expected(ROLES[role], rls)
    # sequences: none, not even the identity's (which is owned by documents.id, not the
    # extension, so it is found by schema)
    sequences = conn.execute(
        "select c.oid::regclass::text,"
        " has_sequence_privilege(%s, c.oid, 'usage,select,update')"
        " from pg_class c join pg_extension e on e.extnamespace = c.relnamespace"
        " where e.extname = 'hybrid_search' and c.relkind = 'S'",
        [role],
    ).fetchall()
    assert ("documents_id_seq", False) in sequences
    assert [name for name, held in sequences if held] == []
    survived(conn, watcher, checkpointer)


def unreachable_writes(conn):
    """One hostile statement per relation and privilege: each must be refused."""
    relations = [
        r
        for (r,) in conn.execute(
            "select c.relname from pg_class c"
            " join pg_depend d on d.objid = c.oid and d.classid = 'pg_class'::regclass"
            " join pg_extension e on e.oid = d.refobjid and e.extname = 'hybrid_search'"
            " where c.relkind in ('r', 'p') and c.relname <> 'documents' order by 1"
        )
    ]
    for relation in relations:
        name = sql.Identifier(relation)
        if relation != "hybrid_search_query_cache":  # inserts allowed, for the role's own rows
            yield sql.SQL("insert into {} default values").format(name)
        yield sql.SQL("update {} set {} = {}").format(
            name,
            sql.Identifier(first_column(conn, relation)),
            sql.Identifier(first_column(conn, relation)),
        )
        yield sql.SQL("delete from {}").format(name)
        yield sql.SQL("truncate {}").format(name)
    yield sql.SQL("truncate documents")
    yield sql.SQL("select nextval('documents_id_seq')")
    yield sql.SQL("select setval('documents_id_seq', 9223372036854775807)")
    yield sql.SQL("alter sequence documents_id_seq restart with 1")
    yield sql.SQL("refresh materialized view hybrid_search_token_stats")
    yield sql.SQL("alter table documents disable trigger all")
    yield sql.SQL("create trigger x after insert on documents execute function _source_changed()")


def first_column(conn, relation):
    return conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum = 1",
        [relation],
    ).fetchone()[0]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_other_table_and_sequence_refuses_hostile_writes(adversary, role):
    conn, _, watcher, checkpointer = adversary
    statements = list(unreachable_writes(conn))
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
    for statement in statements:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    survived(conn, watcher, checkpointer)


HOSTILE_CONTENT = [
    "",
    " ",
    "x" * 200_000,
    "the of and a to in",  # stop words only
    "'; drop table documents; --",
    "\\x00 \\\\ %s %% $1 $$ $func$",
    "🦀" * 5000 + " \u202e\u200b\ufeff",
    " ".join(f"w{i}" for i in range(20_000)),
    "a:* & !b | (c <-> d)",  # tsquery syntax as text
    "\t\n\r" * 1000,
]
HOSTILE_METADATA = [
    {},
    [],
    "just a string",
    12,
    None,
    {"nested": json.loads("[" * 100 + "]" * 100)},
    {"tenant": "hs_adv_write", "big": "y" * 100_000},
    {"tenant": "hs_adv_write", "k\u2028ey": "v", "": ""},
    {"tenant": "hs_adv_write", "_source": "public.anything"},
    {"tenant": "somebody_else"},
]


@pytest.mark.parametrize("content", HOSTILE_CONTENT, ids=range(len(HOSTILE_CONTENT)))
def test_hostile_content_written_by_a_writer(adversary, content):
    conn, _, watcher, checkpointer = adversary
    conn.execute("set role hs_adv_write")
    try:
        conn.execute(
            "insert into documents (content, metadata) values (%s, %s::jsonb)",
            [content, json.dumps({"tenant": "hs_adv_write"})],
        )
        conn.execute(
            "update documents set content = content || ' and more' where content = %s", [content]
        )
    except (
        psycopg.errors.ProgramLimitExceeded,
        psycopg.errors.StringDataRightTruncation,
        psycopg.errors.InvalidParameterValue,
        psycopg.errors.RaiseException,
    ) as refused:
        assert "hybrid_search" in str(refused) or "too long" in str(refused)
    searched = conn.execute("select count(*) from hybrid_search('drop table', 5)").fetchone()[0]
    assert searched <= 2
    survived(conn, watcher, checkpointer)
    assert conn.execute("select count(*) from hybrid_search('owner', 5)").fetchone()[0] >= 1


@pytest.mark.parametrize("metadata", HOSTILE_METADATA, ids=range(len(HOSTILE_METADATA)))
def test_hostile_metadata_written_by_a_writer(adversary, metadata):
    conn, _, watcher, checkpointer = adversary
    conn.execute("set role hs_adv_write")
    own = {"tenant": "hs_adv_write"}
    conn.execute(
        "insert into documents (content, metadata) values ('metadata target', %s::jsonb)",
        [json.dumps(own)],
    )
    for statement in (
        "insert into documents (content, metadata) values ('hostile metadata', %s::jsonb)",
        "update documents set metadata = %s::jsonb where content = 'metadata target'",
    ):
        with contextlib.suppress(
            psycopg.errors.NotNullViolation,
            psycopg.errors.CheckViolation,
            psycopg.errors.InsufficientPrivilege,  # the tenant policy's WITH CHECK
        ):
            conn.execute(statement, [None if metadata is None else json.dumps(metadata)])
    # whatever was accepted: every search still works for everyone, and no row
    # poses as an enabled table's copy
    conn.execute("reset role")
    assert conn.execute(
        "select count(*) from documents where metadata ? '_source' and source is null"
    ).fetchone() == (0,)
    for role in [None, "hs_adv_search", "hs_adv_write"]:
        if role:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
        conn.execute("select count(*) from hybrid_search('metadata target', 5)").fetchone()
        conn.execute(
            "select count(*) from hybrid_search('metadata', 5, filter => '{\"tenant\": 1}')"
        ).fetchone()
        conn.execute("reset role")
    survived(conn, watcher, checkpointer)
