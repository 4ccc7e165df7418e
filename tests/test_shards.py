"""A coordinator and shards (docs/sharding.md), started by `hybrid-search shards
start` as a developer would: hybrid_search on the coordinator gives one node's
ids and scores, a tenant's search asks one shard, writes through the coordinator
land on the shard owning the row, and a shard that is down or slow is an error
naming it (or, opted into, a partial result naming it)."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from helpers import connect, notices
from hybrid_search_installer.cluster import Cluster

CLI = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "hybrid-search"

# tenant t<i % 7> (t6 alone on shard_2 of three); words shared unevenly, so that df
# differs from shard to shard
TOPICS = ["cats", "dogs", "rivers", "mountains", "cities", "boats", "trains"]
CORPUS = [
    (
        f"note {i}: {TOPICS[i % 7]} near {TOPICS[(i * 3) % 7]}"
        + (" and " + TOPICS[(i * 5) % 7]) * (i % 4),
        {"tenant": f"t{i % 7}", "n": i},
    )
    for i in range(60)
]
QUERIES = ["cats near rivers", "boats and trains", "mountains", "note 7 cities"]


def cli(home: Path, *args: str) -> str:
    env = {**os.environ, "HYBRID_SEARCH_HOME": str(home)}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=env, check=True, timeout=600
    ).stdout


class Topology:
    def __init__(self, home: Path, shards: int, port: int):
        self.home, self.shards, self.port = home, shards, port

    def shard_dsn(self, i: int) -> str:
        run = self.home / "shards" / f"shard_{i}" / "run"
        return f"host={run} port={self.port + i} user=postgres dbname=hybrid_search"

    @property
    def dsn(self) -> str:
        run = self.home / "shards" / "coordinator" / "run"
        return f"host={run} port={self.port} user=postgres dbname=hybrid_search"

    def shard_cluster(self, i: int) -> Cluster:
        return Cluster(self.home / "shards" / f"shard_{i}", port=self.port + i)


def start(scratch, layout, model_dir, name, shards, port, *options) -> Topology:
    home = scratch / name
    home.mkdir(mode=0o755)
    (home / "venv").symlink_to(layout.venv)
    (home / "postgresql").symlink_to(layout.postgres_root)
    (home / "model.json").write_text(json.dumps({"model": str(model_dir), "kind": "test"}))
    cli(home, "shards", "start", "--shards", str(shards), "--port", str(port), *options)
    topology = Topology(home, shards, port)
    # one thread everywhere: a vector's sums then run in one order on every server
    for dsn in [topology.dsn, *(topology.shard_dsn(i) for i in range(1, shards + 1))]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select hybrid_search_configure(num_threads => 1, query_threads => 1)")
    return topology


def stop(topology: Topology) -> None:
    cli(
        topology.home,
        "shards",
        "stop",
        "--shards",
        str(topology.shards),
        "--port",
        str(topology.port),
    )


@pytest.fixture(scope="module")
def by_id(scratch, layout, model_dir):
    topology = start(scratch, layout, model_dir, "shards-by-id", 2, 54350)
    yield topology
    stop(topology)


@pytest.fixture(scope="module")
def by_tenant(scratch, layout, model_dir):
    topology = start(
        scratch, layout, model_dir, "shards-by-tenant", 3, 54360, "--shard-key", "tenant"
    )
    yield topology
    stop(topology)


def load(conn, rows=CORPUS) -> None:
    """One INSERT a row, as postgres_fdw sends them to a shard: each row is embedded
    alone everywhere, so its vectors are the same bits on every server."""
    for content, metadata in rows:
        conn.execute(
            "insert into documents (content, metadata) values (%s, %s)",
            [content, json.dumps(metadata)],
        )


def vacuum(topology: Topology) -> None:
    """Deleted and updated-away rows count in BM25's statistics until VACUUM, on
    one node as on a shard."""
    for i in range(1, topology.shards + 1):
        with psycopg.connect(topology.shard_dsn(i), autocommit=True) as conn:
            conn.execute("vacuum documents")


SEARCH = (
    "select id, content, metadata, score, dense_rank, dense_score, sparse_rank, sparse_score,"
    " keyword_rank, keyword_score from hybrid_search(%s, 10, fusion => %s, filter => %s)"
)


def results(conn, query, fusion="weighted", filter=None):
    return conn.execute(SEARCH, [query, fusion, json.dumps(filter) if filter else None]).fetchall()


def assert_same(sharded, single):
    assert [r[:3] for r in sharded] == [r[:3] for r in single]
    for a, b in zip(sharded, single, strict=True):
        assert a[4:6] == b[4:6]  # dense: exact scans of the same vectors
        assert a[6] == b[6] and a[8] == b[8]  # sparse and keyword ranks
        assert a[7] == pytest.approx(b[7], abs=1e-6, rel=0) if b[7] is not None else a[7] is None
        assert a[9] == pytest.approx(b[9], abs=1e-6, rel=0) if b[9] is not None else a[9] is None
        assert a[3] == pytest.approx(b[3], abs=1e-9, rel=0)


@pytest.fixture
def single(db):
    db.execute("select hybrid_search_configure(num_threads => 1, query_threads => 1)")
    load(db)
    db.execute("vacuum documents")
    return db


@pytest.mark.parametrize("fixture", ["by_id", "by_tenant"])
def test_sharded_search_equals_one_node(request, fixture, single):
    topology = request.getfixturevalue(fixture)
    with connect(topology.dsn) as coordinator:
        coordinator.execute("truncate documents")
        coordinator.execute("alter sequence documents_id_seq restart")
        load(coordinator)
        vacuum(topology)
        # every shard holds some rows: the merge is tested, not one shard's answer
        held = coordinator.execute("select count(distinct tableoid) from documents").fetchone()[0]
        assert held == topology.shards
        compared = 0
        for query in QUERIES:
            for fusion in ["weighted", "rrf", "raw"]:
                single_rows = results(single, query, fusion)
                assert single_rows
                assert_same(results(coordinator, query, fusion), single_rows)
                compared += 1
            tenant = {"tenant": "t1"}
            assert_same(
                results(coordinator, query, filter=tenant), results(single, query, filter=tenant)
            )
        # the legs' scores themselves, over the whole candidate lists
        for query in QUERIES:
            statement = (
                "select keyword_rank, id, keyword_score"
                " from hybrid_search(%s, 100, candidates => 100)"
                " where keyword_rank is not null order by 1"
            )
            a = coordinator.execute(statement, [query]).fetchall()
            b = single.execute(statement, [query]).fetchall()
            assert [r[:2] for r in a] == [r[:2] for r in b]
            assert [r[2] for r in a] == pytest.approx([r[2] for r in b], abs=1e-6, rel=0)
        assert compared == 12
        # each leg's own function on the coordinator answers as on one node
        for query in QUERIES:
            for leg in [
                "dense_search(%s, 20)",
                "sparse_search(%s, 20)",
                "keyword_search(%s, 20)",
                'keyword_search(%s, 20, filter => \'{"tenant": "t2"}\')',
                "keyword_search(%s, 20, match => 'note -dogs')",
            ]:
                statement = f"select id, rank, score from {leg}"
                a = coordinator.execute(statement, [query]).fetchall()
                b = single.execute(statement, [query]).fetchall()
                assert a and [r[:2] for r in a] == [r[:2] for r in b], leg
                assert [r[2] for r in a] == pytest.approx([r[2] for r in b], abs=1e-6, rel=0)


def test_tenant_search_asks_one_shard(by_tenant):
    with connect(by_tenant.dsn) as coordinator:
        coordinator.execute("truncate documents")
        load(coordinator)
        whole = {}
        for tenant in [f"t{i}" for i in range(7)]:
            owner = coordinator.execute(
                "select distinct tableoid::regclass::text from documents"
                " where metadata ->> 'tenant' = %s",
                [tenant],
            ).fetchall()
            assert len(owner) == 1  # one tenant, one shard
            whole[tenant] = results(coordinator, "cats near rivers", filter={"tenant": tenant})
            assert whole[tenant] and all(r[2]["tenant"] == tenant for r in whole[tenant])
            asked = coordinator.execute(
                "select current_setting('hybrid_search.shards_queried')"
            ).fetchone()[0]
            assert f"documents_{asked}" == owner[0][0].removeprefix("public.")
        results(coordinator, "cats near rivers")
        asked = coordinator.execute(
            "select current_setting('hybrid_search.shards_queried')"
        ).fetchone()[0]
        assert asked == "shard_1,shard_2,shard_3"

        # with routed statistics a tenant's search asks its shard alone, even for
        # BM25's statistics: it answers while the other shards' tables are locked
        coordinator.execute("set hybrid_search.shard_statistics = 'routed'")
        coordinator.execute("set statement_timeout = '20s'")
        lockers = [connect(by_tenant.shard_dsn(i)) for i in (1, 3)]
        try:
            for locker in lockers:
                locker.execute("begin")
                locker.execute("lock table documents in access exclusive mode")
            rows = results(coordinator, "cats near rivers", filter={"tenant": "t6"})
            assert rows and all(r[2]["tenant"] == "t6" for r in rows)
            with pytest.raises(psycopg.errors.QueryCanceled):
                coordinator.execute("set statement_timeout = '1s'")
                results(coordinator, "cats near rivers", filter={"tenant": "t0"})
        finally:
            for locker in lockers:
                locker.close()
            coordinator.execute("reset statement_timeout")
            coordinator.execute("reset hybrid_search.shard_statistics")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="shard_statistics"):
            coordinator.execute("set hybrid_search.shard_statistics = 'some'")
            results(coordinator, "cats")
        coordinator.execute("reset hybrid_search.shard_statistics")


TENANT_ROLE, UNDECLARED_ROLE = "hs_tenant_t1", "hs_undeclared"


@pytest.fixture
def tenant_roles(by_tenant, single):
    """hs_tenant_t1 restricted to tenant t1 by hybrid_search_coordinator_tenant on
    the coordinator, and the same policy on one node; hs_undeclared under the
    coordinator's row-level security with no tenant. Both may search and select."""
    with connect(by_tenant.dsn) as coordinator:
        coordinator.execute("truncate documents")
        coordinator.execute("alter sequence documents_id_seq restart")  # one node's ids
        load(coordinator)
        vacuum(by_tenant)
        for conn in (coordinator, single):
            for role in (TENANT_ROLE, UNDECLARED_ROLE):
                conn.execute(f"drop role if exists {role}")
                conn.execute(f"create role {role} login")
                conn.execute("select hybrid_search_grant(%s, 'search')", [role])
        coordinator.execute(f"grant select on documents to {TENANT_ROLE}, {UNDECLARED_ROLE}")
        servers = [n for (n,) in coordinator.execute("select name from hybrid_search_shards")]
        for server in servers:  # for SELECTs through the foreign partitions only
            coordinator.execute(
                f"create user mapping for {TENANT_ROLE} server {server}"
                " options (user 'postgres', password_required 'false')"
            )
        coordinator.execute("select hybrid_search_coordinator_tenant(%s, 't1')", [TENANT_ROLE])
        single.execute("alter table documents enable row level security")
        single.execute(
            f"create policy t1 on documents to {TENANT_ROLE}"
            """ using (metadata @> '{"tenant": "t1"}')"""
        )
        try:
            yield coordinator
        finally:
            single.execute("reset role")
            single.execute("drop policy t1 on documents")
            single.execute("alter table documents disable row level security")
            coordinator.execute("select hybrid_search_coordinator_tenant(%s, null)", [TENANT_ROLE])
            coordinator.execute("alter table documents disable row level security")
            for server in servers:
                coordinator.execute(f"drop user mapping for {TENANT_ROLE} server {server}")
            for conn in (coordinator, single):
                for role in (TENANT_ROLE, UNDECLARED_ROLE):
                    conn.execute(f"drop owned by {role}")
                    conn.execute(f"drop role {role}")


def test_a_tenant_role_asks_its_shard_for_its_rows(by_tenant, single, tenant_roles):
    coordinator = tenant_roles
    (owner,) = coordinator.execute(
        "select distinct tableoid::regclass::text from documents where metadata ->> 'tenant' = 't1'"
    ).fetchone()
    as_tenant = f"{by_tenant.dsn} user={TENANT_ROLE}"
    single.execute(f"set role {TENANT_ROLE}")
    with connect(as_tenant) as tenant:
        queried = "select current_setting('hybrid_search.shards_queried')"
        for query in QUERIES:
            rows = results(tenant, query)
            assert rows and {r[2]["tenant"] for r in rows} == {"t1"}
            assert f"documents_{tenant.execute(queried).fetchone()[0]}" == owner.removeprefix(
                "public."
            )
            # one node under the same policy: the same ids and scores (BM25 with
            # the statistics of t1's rows there as on its shard)
            assert_same(rows, results(single, query))
            for fusion in ["rrf", "raw"]:
                assert_same(results(tenant, query, fusion), results(single, query, fusion))
            # its own filter, narrowed further, or naming its tenant again
            narrow = {"tenant": "t1", "n": 8}
            expected = results(single, query, filter=narrow)
            assert_same(results(tenant, query, filter=narrow), expected)
            assert_same(results(tenant, query, filter={"n": 8}), expected)
            for leg in ["dense_search(%s, 20)", "sparse_search(%s, 20)", "keyword_search(%s, 20)"]:
                statement = f"select id, rank, score from {leg}"
                a = tenant.execute(statement, [query]).fetchall()
                b = single.execute(statement, [query]).fetchall()
                assert a and [r[:2] for r in a] == [r[:2] for r in b], leg
                assert [r[2] for r in a] == pytest.approx([r[2] for r in b], abs=1e-6, rel=0)
            # another tenant's filter: nothing, and no shard asked
            assert results(tenant, query, filter={"tenant": "t2"}) == []
            assert tenant.execute(queried).fetchone()[0] == ""
        # a SELECT through the routing table sees the same tenant
        seen = tenant.execute("select distinct metadata ->> 'tenant' from documents").fetchall()
        assert seen == [("t1",)]
        # other tenants' rows by id, through the coordinator's internals: none
        others = [
            i
            for (i,) in coordinator.execute(
                "select id from documents where metadata ->> 'tenant' <> 't1'"
            )
        ]
        assert (
            tenant.execute(
                "select count(*) from hybrid_search._coordinator_documents('x', %s, null)",
                [others],
            ).fetchone()[0]
            == 0
        )
        # the role cannot change its tenant, act as another role, or reach a shard
        # itself (no setting is the source of truth)
        for statement in [
            "select hybrid_search_coordinator_tenant('hs_tenant_t1', 't2')",
            "update hybrid_search.hybrid_search_coordinator_tenants set tenant = 't2'",
            "select * from hybrid_search.hybrid_search_coordinator_tenants",
            "select * from hybrid_search._coordinator_fanout('x', 'postgres', 'legs', '{}')",
            "select * from hybrid_search._shards_run('x', '{shard_1}', 'select 1')",
            "select * from hybrid_search_remote.dblink('shard_1', 'select 1') as t (i int)",
            "drop policy hybrid_search_tenant_hs_tenant_t1 on documents",
            "alter table documents disable row level security",
        ]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                tenant.execute(statement)
        tenant.execute("set row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            tenant.execute("select * from documents")
        tenant.execute("reset row_security")
        assert {r[2]["tenant"] for r in results(tenant, "cats")} == {"t1"}
    single.execute("reset role")

    # row-level security without a declaration: refused, not every tenant's rows
    with connect(f"{by_tenant.dsn} user={UNDECLARED_ROLE}") as undeclared:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no tenant is declared"):
            results(undeclared, "cats")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no tenant is declared"):
            undeclared.execute("select * from dense_search(embed_dense('cats'), 5)").fetchall()
    # the owner, exempt from the policy, searches every shard as before
    results(coordinator, "cats")
    assert (
        coordinator.execute("select current_setting('hybrid_search.shards_queried')").fetchone()[0]
        == "shard_1,shard_2,shard_3"
    )


def shard_rows(topology: Topology) -> dict[int, list]:
    rows = {}
    for i in range(1, topology.shards + 1):
        with connect(topology.shard_dsn(i)) as conn:
            check = conn.execute(
                "select check_name, status, detail from hybrid_search_check() where status <> 'ok'"
            ).fetchall()
            assert check == [], f"shard_{i}: {check}"
            rows[i] = conn.execute(
                "select id, content, metadata, dense = embed_dense(content), fts is not null"
                " from documents order by id"
            ).fetchall()
    return rows


def test_writes_through_the_coordinator(by_id):
    with connect(by_id.dsn) as coordinator:
        coordinator.execute("truncate documents")
        load(coordinator, CORPUS[:10])
        with coordinator.cursor().copy("copy documents (content, metadata) from stdin") as copy:
            for content, metadata in CORPUS[10:20]:
                copy.write_row([content, json.dumps(metadata)])
        ids = [i for (i,) in coordinator.execute("select id from documents order by id")]
        assert len(ids) == 20
        coordinator.execute(
            "update documents set content = 'a new text about lighthouses' where id = %s", [ids[3]]
        )
        coordinator.execute(
            'update documents set metadata = \'{"tenant": "moved"}\' where id = %s', [ids[12]]
        )
        coordinator.execute("delete from documents where id in (%s, %s)", [ids[5], ids[15]])
        expected = coordinator.execute(
            "select id, content, metadata, tableoid::regclass::text from documents order by id"
        ).fetchall()
        assert len(expected) == 18
        rows = shard_rows(by_id)
        # each row on exactly the shard its id hashes to, embedded there for its content
        held = {r[0]: (r[1], r[2], f"documents_shard_{i}") for i, rs in rows.items() for r in rs}
        assert {id: (c, m, t.removeprefix("public.")) for id, c, m, t in expected} == held
        assert all(r[3] and r[4] for rs in rows.values() for r in rs)
        assert sum(len(rs) for rs in rows.values()) == 18
        assert held[ids[3]][0] == "a new text about lighthouses"
        assert held[ids[12]][1] == {"tenant": "moved"}
        assert results(coordinator, "lighthouses")[0][0] == ids[3]
        # the coordinator's check runs every shard's
        checks = coordinator.execute(
            "select check_name, status from hybrid_search_check()"
        ).fetchall()
        assert ("shard_1: settings", "ok") in checks and ("shard_2: fts", "ok") in checks
        assert all(status != "error" for _, status in checks), checks


def test_statement_timeout_and_cancel_reach_the_shards(by_id):
    with connect(by_id.dsn) as coordinator, connect(by_id.shard_dsn(2)) as locker:
        coordinator.execute("truncate documents")
        load(coordinator, CORPUS[:10])
        results(coordinator, "cats")  # connections to both shards open
        locker.execute("begin")
        locker.execute("lock table documents in access exclusive mode")
        coordinator.execute("set statement_timeout = '1s'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            results(coordinator, "cats")
        assert time.monotonic() - started < 10
        coordinator.execute("reset statement_timeout")
        # the shard's search was cancelled too: nothing waits for the lock there
        deadline = time.monotonic() + 10
        while locker.execute("select count(*) from pg_locks where not granted").fetchone()[0]:
            assert time.monotonic() < deadline, "the shard still runs the cancelled search"
            time.sleep(0.1)

        # a cancel (Ctrl-C) likewise
        timer = threading.Timer(1.0, coordinator.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            results(coordinator, "cats")
        timer.join()
        deadline = time.monotonic() + 10
        while locker.execute("select count(*) from pg_locks where not granted").fetchone()[0]:
            assert time.monotonic() < deadline, "the shard still runs the cancelled search"
            time.sleep(0.1)

        # a slow shard, opted into partial results: the others' answer, and its name
        coordinator.execute("set hybrid_search.shard_timeout = '500ms'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="shard shard_2 did not answer"):
            results(coordinator, "cats")
        coordinator.execute("set hybrid_search.shards_partial = on")
        rows = results(coordinator, "cats")
        assert rows
        assert (
            coordinator.execute(
                "select current_setting('hybrid_search.shards_missing')"
            ).fetchone()[0]
            == "shard_2"
        )
        locker.execute("rollback")
        coordinator.execute("reset hybrid_search.shard_timeout")
        coordinator.execute("reset hybrid_search.shards_partial")
        on_shard_2 = {i for (i,) in coordinator.execute("select id from documents_shard_2")}
        assert not on_shard_2 & {r[0] for r in rows}
        assert on_shard_2 & {r[0] for r in results(coordinator, "cats")}


def test_a_stopped_shard(by_tenant):
    with connect(by_tenant.dsn) as coordinator:
        coordinator.execute("truncate documents")
        load(coordinator, CORPUS[:30])
        vacuum(by_tenant)  # BM25's statistics as after the restart's autovacuum
        everything = results(coordinator, "cats near rivers")
        by_tenant.shard_cluster(2).stop(mode="immediate")
        try:
            with pytest.raises(psycopg.Error, match="shard shard_2 failed") as failure:
                results(coordinator, "cats near rivers")
            assert "shards_partial" in (failure.value.diag.message_hint or "")
            coordinator.execute("set hybrid_search.shards_partial = on")
            with notices(coordinator) as warnings:
                partial = results(coordinator, "cats near rivers")
            assert any("shard shard_2 is missing" in w for w in warnings)
            missing = coordinator.execute(
                "select current_setting('hybrid_search.shards_missing')"
            ).fetchone()[0]
            assert missing == "shard_2"
            # the rows of the other shards, no row of shard_2's tenant
            lost = coordinator.execute(
                "select t from unnest(array['t0', 't1', 't2', 't3', 't4', 't5', 't6']) as t"
                " where hybrid_search._coordinator_route(jsonb_build_object('tenant', t))"
                " = '{shard_2}'"
            ).fetchall()
            assert partial and all(r[2]["tenant"] not in {t for (t,) in lost} for r in partial)
            coordinator.execute("reset hybrid_search.shards_partial")
        finally:
            by_tenant.shard_cluster(2).start()
        # the shard back: searched again on a new connection
        vacuum(by_tenant)
        assert [r[0] for r in results(coordinator, "cats near rivers")] == [
            r[0] for r in everything
        ]


def test_adding_a_shard_moves_rows_and_loses_none(by_id, single):
    with connect(by_id.dsn) as coordinator:
        coordinator.execute("truncate documents")
        coordinator.execute("alter sequence documents_id_seq restart")
        load(coordinator)
        out = cli(by_id.home, "shards", "start", "--shards", "3", "--port", str(by_id.port))
        assert "shard_3 added" in out
        by_id.shards = 3
        rows = shard_rows(by_id)
        ids = sorted(r[0] for rs in rows.values() for r in rs)
        assert ids == list(range(1, len(CORPUS) + 1))  # every row once
        assert all(rows[i] for i in (1, 2, 3))
        layout = coordinator.execute(
            "select name, modulus, remainder from hybrid_search_shards order by name"
        ).fetchall()
        assert layout == [("shard_1", 4, 0), ("shard_2", 2, 1), ("shard_3", 4, 2)]
        # rows written now go to the shard their id hashes to among the three
        load(coordinator, CORPUS[:6])
        rows = shard_rows(by_id)
        placed = coordinator.execute(
            "select id, tableoid::regclass::text from documents where id > %s", [len(CORPUS)]
        ).fetchall()
        for id, partition in placed:
            shard = int(partition.rsplit("_", 1)[1])
            assert id in {r[0] for r in rows[shard]}
        coordinator.execute("delete from documents where id > %s", [len(CORPUS)])
        vacuum(by_id)
        # shard_3 embedded its rows with its own thread count: scores to 1e-6
        for query in QUERIES:
            a, b = results(coordinator, query), results(single, query)
            assert [r[:3] for r in a] == [r[:3] for r in b]
            for x, y in zip(a, b, strict=True):
                assert x[3:] == pytest.approx(y[3:], abs=1e-6, rel=0)
