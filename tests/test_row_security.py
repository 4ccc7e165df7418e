"""Row-level security: a tenant sees only its rows in every leg and in the fused
result, and learns nothing about other tenants through the derived data."""

import psycopg
import pytest
from helpers import insert, tenant_policy

TENANT_DOCS = {
    "tenant_a": [
        "VACUUM reclaims dead tuples in tenant A's tables",
        "tenant A runs a streaming replica for reads",
        "index bloat grows after mass updates",
    ],
    "tenant_b": [
        "VACUUM FULL rewrites the table and locks it",
        "tenant B secret: the merger closes on Friday",
        "index only scans need an up to date visibility map",
    ],
}
QUERIES = ["vacuum dead tuples", "index", "secret merger", "replica"]
LEGS = ["dense_search", "sparse_search", "keyword_search"]


@pytest.fixture
def tenants(db):
    """Two tenant roles writing through hybrid_search_grant, with a policy on documents."""
    for tenant, contents in TENANT_DOCS.items():
        insert(db, *contents, metadata={"tenant": tenant})
    db.execute("select hybrid_search_refresh()")
    with tenant_policy(db, TENANT_DOCS):
        yield db


def checks_of(conn):
    return {name: status for name, status, _ in conn.execute("select * from hybrid_search_check()")}


def ids_of(conn, tenant):
    return {
        i
        for (i,) in conn.execute(
            "select id from documents where metadata->>'tenant' = %s", [tenant]
        ).fetchall()
    }


def test_every_leg_and_the_fusion_see_only_the_tenants_rows(tenants):
    own = {t: ids_of(tenants, t) for t in TENANT_DOCS}
    # the owner's filtered results are what the tenant must get
    expected = {
        (t, q, name): tenants.execute(
            f"select id, rank, score from {name}(%s, 10, %s::jsonb)",
            [q, f'{{"tenant": "{t}"}}'],
        ).fetchall()
        for t in TENANT_DOCS
        for q in QUERIES
        for name in LEGS
    }
    fused = {
        (t, q): tenants.execute(
            "select id, score from hybrid_search(%s, 10, filter => %s::jsonb)",
            [q, f'{{"tenant": "{t}"}}'],
        ).fetchall()
        for t in TENANT_DOCS
        for q in QUERIES
    }
    for tenant in TENANT_DOCS:
        tenants.execute(f"set role {tenant}")
        for query in QUERIES:
            for name in LEGS:
                got = tenants.execute(
                    f"select id, rank, score from {name}(%s, 10)", [query]
                ).fetchall()
                assert {r[0] for r in got} <= own[tenant], (tenant, query, name)
                if name == "keyword_search":
                    # BM25 statistics come from the rows the tenant can see, not from
                    # the owner's index: the same documents, other scores
                    assert {r[0] for r in got} == {r[0] for r in expected[(tenant, query, name)]}
                    continue
                assert [r[:2] for r in got] == [r[:2] for r in expected[(tenant, query, name)]]
                assert [r[2] for r in got] == pytest.approx(
                    [r[2] for r in expected[(tenant, query, name)]], rel=1e-5
                )
            got = tenants.execute("select id, score from hybrid_search(%s, 10)", [query]).fetchall()
            assert {r[0] for r in got} == {r[0] for r in fused[(tenant, query)]}
        tenants.execute("reset role")
    # the sparse leg really ran for the tenant (its index scan filters by the policy)
    tenants.execute("set role tenant_b")
    assert tenants.execute("select count(*) from sparse_search('secret merger', 10)").fetchone()[0]


def test_derived_data_is_not_readable_by_a_tenant(tenants):
    tenants.execute("set role tenant_a")
    for relation in [
        "hybrid_search_token_stats",
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            tenants.execute(f"select * from {relation}")
    # sparse_explain shows corpus-wide statistics: not for tenants
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        tenants.execute("select * from sparse_explain('secret merger')")
    # query_tokens only describes the caller's own text
    tokens = tenants.execute("select token from query_tokens('secret merger')").fetchall()
    assert tokens
    assert tenants.execute("select count(*) from documents").fetchone()[0] == 3


def test_a_tenant_cannot_write_or_move_rows_to_another_tenant(tenants):
    tenants.execute("set role tenant_a")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        insert(tenants, "planted", metadata={"tenant": "tenant_b"})
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        tenants.execute('update documents set metadata = \'{"tenant": "tenant_b"}\'')
    # updating or deleting another tenant's rows touches nothing
    assert tenants.execute("delete from documents where content like '%merger%'").rowcount == 0
    (doc_id,) = insert(tenants, "tenant A writes about vacuum", metadata={"tenant": "tenant_a"})
    assert doc_id in [r[0] for r in tenants.execute("select id from hybrid_search('vacuum', 10)")]
    tenants.execute("reset role")
    assert tenants.execute("select count(*) from documents").fetchone()[0] == 7
    assert tenants.execute(
        "select dense is not null from documents where id = %s", [doc_id]
    ).fetchone()[0]


def test_grant_withholds_the_index_and_check_catches_a_manual_grant(tenants):
    assert checks_of(tenants)["privileges"] == "ok"
    tenants.execute("grant select on hybrid_search_token_stats to tenant_a")
    status, detail = tenants.execute(
        "select status, detail from hybrid_search_check() where check_name = 'privileges'"
    ).fetchone()
    assert status == "error" and "tenant_a" in detail and "tenant_b" not in detail
    # granting again under row-level security takes the index away
    tenants.execute("select hybrid_search_grant('tenant_a', 'write')")
    assert checks_of(tenants)["privileges"] == "ok"
