"""ALTER EXTENSION hybrid_search UPDATE from the previous release keeps the data,
the vectors, the grants and the searches, and leaves exactly the schema a fresh
install of the current version has."""

import psycopg
import pytest
from helpers import connect, insert
from hybrid_search_installer import database

RELEASES = ["0.1.0", "0.2.0"]
QUERIES = ["vacuum dead tuples", "streaming replica", "index 3"]
ROWS = "select id, content, metadata, dense::text, sparse::text, model from documents order by id"

# One line per property of every object the extension owns (and of the indexes,
# triggers and policies on its tables): a fresh install and an upgraded one must agree.
SCHEMA = """
with member as (
    select d.classid, d.objid
    from pg_depend d join pg_extension e on e.oid = d.refobjid
    where d.refclassid = 'pg_extension'::regclass and d.deptype = 'e'
      and e.extname = 'hybrid_search'
), rel as (
    select c.oid, c.relname, c.relkind from pg_class c
    join member m on m.classid = 'pg_class'::regclass and m.objid = c.oid
)
select 'function ' || p.oid::regprocedure || ': ' || coalesce(
        (select 'aggregate of ' || a.aggtransfn::regprocedure || ' into ' || a.aggtranstype::regtype
        from pg_aggregate a where a.aggfnoid = p.oid),
        pg_get_functiondef(p.oid))
    || ' acl ' || coalesce(array(select a::text from unnest(p.proacl) a order by 1)::text, '-')
    || ' comment ' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
from pg_proc p join member m on m.classid = 'pg_proc'::regclass and m.objid = p.oid
union all
select 'relation ' || r.relname || ' ' || r.relkind::text
    || ' acl ' || coalesce(array(select a::text from unnest(c.relacl) a order by 1)::text, '-')
    || ' comment ' || coalesce(obj_description(r.oid, 'pg_class'), '-')
    || ' view ' || coalesce(case when r.relkind in ('v', 'm') then pg_get_viewdef(r.oid) end, '-')
from rel r join pg_class c on c.oid = r.oid
union all
select 'column ' || r.relname || ' ' || row_number() over (partition by r.oid order by a.attnum)
    || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
    || a.attnotnull || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-')
    || ' comment ' || coalesce(col_description(r.oid, a.attnum), '-')
from rel r join pg_attribute a on a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef ad on ad.adrelid = r.oid and ad.adnum = a.attnum
union all
select 'constraint ' || r.relname || ' ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
from rel r join pg_constraint co on co.conrelid = r.oid
union all
select 'index ' || pg_get_indexdef(i.indexrelid)
from rel r join pg_index i on i.indrelid = r.oid
union all
select 'trigger ' || pg_get_triggerdef(t.oid)
from rel r join pg_trigger t on t.tgrelid = r.oid and not t.tgisinternal
union all
select 'policy ' || r.relname || ' ' || po.polname
from rel r join pg_policy po on po.polrelid = r.oid
union all
select 'type ' || t.typname || ' ' || coalesce(obj_description(t.oid, 'pg_type'), '-') || ' '
    || coalesce(array(select a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
        from pg_attribute a where a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped
        order by a.attnum)::text, '-')
from pg_type t join member m on m.classid = 'pg_type'::regclass and m.objid = t.oid
union all
select 'event trigger ' || ev.evtname || ' ' || ev.evtevent || ' ' || ev.evtfoid::regproc
    || ' ' || ev.evttags::text
from pg_event_trigger ev
join member m on m.classid = 'pg_event_trigger'::regclass and m.objid = ev.oid
union all
select 'config dump ' || c::regclass::text || ' ' || w
from pg_extension e, unnest(e.extconfig, e.extcondition) as x (c, w)
where e.extname = 'hybrid_search'
order by 1
"""


def schema(conn) -> list[str]:
    return [r[0] for r in conn.execute(SCHEMA).fetchall()]


def results(conn) -> dict:
    return {
        (leg, q): conn.execute(f"select id, score from {leg}(%s, 10)", [q]).fetchall()
        for leg in ("hybrid_search", "sparse_search", "keyword_search")
        for q in QUERIES
    }


def create_at(cluster, layout, model_dir, name: str, version: str) -> str:
    database.recreate_database(cluster.dsn("postgres"), name)
    dsn = cluster.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"create extension hybrid_search version '{version}' cascade")
        conn.execute("select hybrid_search_configure(python_venv => %s)", [str(layout.venv)])
        conn.execute("select hybrid_search_set_model(%s)", [str(model_dir)])
    return dsn


def load(conn, role: str) -> None:
    """Rows in every state: embedded, queued, in a user table, granted to a role."""
    conn.execute("select hybrid_search_configure(text_search_config => 'simple')")
    insert(conn, *[f"index {i} about vacuum dead tuples" for i in range(20)], metadata={"a": 1})
    insert(conn, "a streaming replica replays WAL")
    conn.execute("create table notes (id int primary key, body text)")
    conn.execute(
        "insert into notes select i, 'note ' || i || ' on replicas'  from generate_series(1, 5) i"
    )
    conn.execute("select hybrid_search_enable('notes', 'body', mode => 'sync')")
    conn.execute("select hybrid_search_process_queue()")  # enable queues existing rows
    conn.execute("select hybrid_search_configure(embed_mode => 'queued')")
    insert(conn, "queued before the upgrade")
    conn.execute("select hybrid_search_configure(embed_mode => 'sync')")
    conn.execute("select hybrid_search_refresh()")
    conn.execute(f"select hybrid_search_grant('{role}', 'write')")


@pytest.fixture
def role(conn):
    conn.execute("create role hs_upgrade_app")
    yield "hs_upgrade_app"
    for name in ("hybrid_search_upgraded", "hybrid_search_fresh"):
        conn.execute(f"drop database if exists {name} with (force)")
    conn.execute("drop role hs_upgrade_app")


@pytest.mark.parametrize("previous", RELEASES)
def test_one_step_update_path_from_every_release(conn, previous):
    (current,) = conn.execute(
        "select default_version from pg_available_extensions where name = 'hybrid_search'"
    ).fetchone()
    path = conn.execute(
        "select path from pg_extension_update_paths('hybrid_search')"
        " where source = %s and target = %s",
        [previous, current],
    ).fetchone()
    assert path == (f"{previous}--{current}",)


@pytest.mark.parametrize("previous", RELEASES)
def test_update_keeps_data_grants_and_searches(cluster, layout, model_dir, role, previous):
    upgraded = create_at(cluster, layout, model_dir, "hybrid_search_upgraded", previous)
    with connect(upgraded) as conn:
        load(conn, role)
        rows, before = conn.execute(ROWS).fetchall(), results(conn)
        assert all(r[3] is not None for r in rows if r[1] != "queued before the upgrade")

        conn.execute("alter extension hybrid_search update")
        version = conn.execute(
            "select e.extversion, a.default_version from pg_extension e"
            " join pg_available_extensions a on a.name = e.extname"
            " where e.extname = 'hybrid_search'"
        ).fetchone()
        assert version[0] == version[1] != previous

        # nothing re-embedded, nothing lost, same answers
        assert conn.execute(ROWS).fetchall() == rows
        after = results(conn)
        for search in before:
            assert [r[0] for r in after[search]] == [r[0] for r in before[search]], search
            # query embeddings may run on another thread count (query_threads): the same
            # vectors up to summation order, which min-max fusion scales up to about 1e-6
            assert [r[1] for r in after[search]] == pytest.approx(
                [r[1] for r in before[search]], rel=1e-5, abs=1e-6
            )

        # the queue entry written by the old version is still worked off, user-table triggers work
        assert conn.execute("select embedded from hybrid_search_process_queue()").fetchone() == (1,)
        checks = conn.execute("select * from hybrid_search_check()").fetchall()
        assert [c for c in checks if c[1] != "ok"] == []
        conn.execute("insert into notes values (6, 'a note written after the upgrade')")
        assert conn.execute(
            "select dense is not null from documents where source = 'public.notes'"
            " and source_key = '6'"
        ).fetchone() == (True,)

        # the application role keeps its level, including whatever this version added to it
        conn.execute(f"set role {role}")
        assert conn.execute("select count(*) from hybrid_search('replica', 5)").fetchone()[0] > 0
        insert(conn, "written by the application after the upgrade")
        conn.execute("reset role")

    fresh = create_at(cluster, layout, model_dir, "hybrid_search_fresh", version[0])
    with connect(fresh) as conn:
        load(conn, role)
        conn.execute("select hybrid_search_disable('notes')")
    with connect(upgraded) as conn:
        conn.execute("select hybrid_search_disable('notes')")
        # the update keeps the released version's HNSW index; the DBA makes it the graph
        dense_method = (
            "select a.amname from pg_class c join pg_am a on a.oid = c.relam"
            " where c.oid = 'documents_dense_idx'::regclass"
        )
        assert conn.execute(dense_method).fetchone() == ("hnsw",)
        conn.execute("select hybrid_search_create_dense_index()")
        assert conn.execute(dense_method).fetchone() == ("dense_flat",)
        got = schema(conn)
    with connect(fresh) as conn:
        expected = schema(conn)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert (missing, extra) == ([], []), "upgrade differs from a fresh install:\n" + "\n".join(
        [f"- {line[:300]}" for line in missing] + [f"+ {line[:300]}" for line in extra]
    )


def test_setup_updates_an_older_database(cluster, layout, model_dir, role):
    dsn = create_at(cluster, layout, model_dir, "hybrid_search_upgraded", RELEASES[0])
    database.ensure_extension(dsn, layout, str(model_dir))
    with connect(dsn) as conn:
        assert conn.execute(
            "select installed_version = default_version from pg_available_extensions"
            " where name = 'hybrid_search'"
        ).fetchone() == (True,)
