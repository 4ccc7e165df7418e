"""What any role can do to its own session cannot crash the server, corrupt a backend or
change a result (issue 13, the adversarial suite):

- every setting a non-superuser can change, at odd values, around every function a
  'write' role may call (parallel modes, planner and plan-cache settings, work_mem,
  JIT everywhere, timeouts, output formats, pgvector's settings, a search_path that
  puts a hostile schema and hostile temporary tables first);
- SET ROLE switches and savepoint rollbacks (also of errors and cancels) around
  embedding calls;
- cursors (also WITH HOLD, scrolled backwards, fetched across role switches) and
  prepared statements (custom and generic plans) over the search functions.

Each case runs on the server without preloading (a crash there cannot take the rest
of the suite with it). After each: no backend crashed (a connection held across the
case still works and the checkpointer is the same process), hybrid_search_check()
has no 'error' row, and the role's own backend still gives the baseline results.
"""

import psycopg
import pytest
from adversarial import Watch
from helpers import connect
from psycopg import sql

ROLE = "hs_adversary"
DOCUMENTS = [
    "quarterly sales grew in the north",
    "the sales team met on monday",
    "weather report for the coast",
    "vacuum and analyze a table",
]

# a sparse vector's weights to 5 decimals, as embed_dense's below: the model's float
# sums may differ in the last bit between calls (one full run saw a weight of
# embed_sparse('sales') differ by one unit in the last place)
ROUNDED_WEIGHTS = (
    "(select jsonb_object_agg(t.key, round(t.value::numeric, 5))"
    " from jsonb_each({{s}}.sparse_to_jsonb({sparse})) as t)::text"
)

# every function a 'write' role may call, schema-qualified as a careful caller would
# (a search_path case puts a hostile schema with the same names first); results are
# made independent of output settings (numeric, not float, text)
CALLS = {
    "embed_dense": "select array(select round(x::numeric, 5)"
    " from unnest({s}.embed_dense('sales')::real[]) as x)",
    "embed_sparse": "select " + ROUNDED_WEIGHTS.format(sparse="{s}.embed_sparse('sales')"),
    "embed": "select {s}.vector_dims(e.dense), "
    + ROUNDED_WEIGHTS.format(sparse="e.sparse")
    + " from {s}.embed('sales team') as e",
    "embed_batch": "select ord, dense is null, sparse is null"
    " from {s}.embed_batch(array['a', null, 'sales'])",
    "dense_search(text)": "select id, rank from {s}.dense_search('sales', 3)",
    "dense_search(vector)": "select id, rank"
    " from {s}.dense_search({s}.embed_dense('weather'), 2, '{{}}'::jsonb, 1)",
    "sparse_search(text)": "select id, rank from {s}.sparse_search('sales', 3)",
    "sparse_search(sparsevec)": "select id, rank"
    " from {s}.sparse_search({s}.embed_sparse('team'), 3)",
    "sparse_search_scan": "select id, rank from {s}.sparse_search_scan({s}.embed_sparse('sales'))",
    "keyword_search": "select id, rank, round(score::numeric, 6)"
    " from {s}.keyword_search('sales team', 3, match => 'sales')",
    "keyword_search_scan": "select id, rank, round(score::numeric, 6)"
    " from {s}.keyword_search_scan('sales team', 3)",
    "hybrid_search(text)": "select id, dense_rank, sparse_rank, keyword_rank,"
    " round(score::numeric, 6) from {s}.hybrid_search('sales', 3, fusion => 'rrf')",
    "hybrid_search(vectors)": "select id, round(score::numeric, 6) from {s}.hybrid_search("
    "'sales', {s}.embed_dense('sales'), {s}.embed_sparse('sales'), 3, filter => '{{}}')",
    "hybrid_search colbert": "select id, colbert_rank"
    " from {s}.hybrid_search('sales', 2, colbert_rerank => 3)",
    "colbert_rerank": "select id, rank from {s}.colbert_rerank('sales', array[1, 2, 3])",
    "query_tokens": "select token_id, token from {s}.query_tokens('sales team')",
    "sparse_explain": "select token_id, document_frequency from {s}.sparse_explain('sales')",
    "sparse_dot": "select round({s}.sparse_dot({s}.embed_sparse('sales'),"
    " {s}.embed_sparse('sales team'))::numeric, 5),"
    " {s}.sparse_dot('{{\"1\": 2}}'::jsonb, '{{\"1\": 3}}'::jsonb)::numeric",
    "sparse_entries": "select count(*) from {s}.sparse_entries({s}.embed_sparse('sales'))",
    "model_info": "select model, dense_dimensions from {s}.hybrid_search_model_info()",
    "model_stats": "select loaded from {s}.hybrid_search_model_stats()",
    "evaluate": "select method, judged, round(ndcg::numeric, 6)"
    " from {s}.hybrid_search_evaluate('pg_temp.questions', 'pg_temp.judged', 3)",
    "write and embed": "with w as (insert into {s}.documents (content)"
    " values ('an adversarial write') returning id) select count(*) from w",
    "change and re-embed": "with u as (update {s}.documents"
    " set content = 'an adversarial write, changed'"
    " where content operator(pg_catalog.=) 'an adversarial write' returning id)"
    " select count(*) from u",
    "delete": "with d as (delete from {s}.documents"
    " where content operator(pg_catalog.~~) 'an adversarial write%'"
    " returning id) select count(*) from d",
}
WRITES = {"write and embed", "change and re-embed", "delete"}

EAGER_PARALLEL = [
    "force_parallel_mode = on",
    "parallel_setup_cost = 0",
    "parallel_tuple_cost = 0",
    "min_parallel_table_scan_size = 0",
    "min_parallel_index_scan_size = 0",
    "max_parallel_workers_per_gather = 4",
]

# case -> (SET statements, errors a call may end with instead of the baseline result)
CASES = {
    "eager parallel": (EAGER_PARALLEL, ()),
    "parallel plans run by the leader": (
        ["force_parallel_mode = on", "max_parallel_workers = 0"],
        (),
    ),
    "force_parallel_mode regress, no leader": (
        [
            *EAGER_PARALLEL[1:],
            "force_parallel_mode = regress",
            "parallel_leader_participation = off",
        ],
        (),
    ),
    "tiny work_mem": (["work_mem = '64kB'", "hash_mem_multiplier = 1"], ()),
    "jit for every statement": (["jit = on", "jit_above_cost = 0"], ()),
    "no index scans": (
        ["enable_indexscan = off", "enable_bitmapscan = off", "enable_indexonlyscan = off"],
        (),
    ),
    "no seqscan, hash, merge, sort": (
        [
            "enable_seqscan = off",
            "enable_hashjoin = off",
            "enable_mergejoin = off",
            "enable_hashagg = off",
            "enable_sort = off",
            "enable_material = off",
        ],
        (),
    ),
    "odd costs and join limits": (
        [
            "random_page_cost = 1000000",
            "cpu_operator_cost = 0",
            "cursor_tuple_fraction = 0.000001",
            "geqo_threshold = 2",
            "from_collapse_limit = 1",
            "join_collapse_limit = 1",
        ],
        (),
    ),
    "generic plans": (["plan_cache_mode = force_generic_plan"], ()),
    "custom plans": (["plan_cache_mode = force_custom_plan"], ()),
    "pgvector's settings": (
        ["hnsw.ef_search = 1", "hnsw.iterative_scan = off", "ivfflat.probes = 1"],
        (),
    ),
    "output and parsing formats": (
        [
            "extra_float_digits = -15",
            "bytea_output = escape",
            "datestyle = 'SQL, DMY'",
            "intervalstyle = sql_standard",
            "timezone = 'Pacific/Kiritimati'",
            "standard_conforming_strings = off",
            "backslash_quote = on",
            "quote_all_identifiers = on",
            "array_nulls = off",
            "transform_null_equals = on",
            "default_text_search_config = 'pg_catalog.simple'",
            "gin_fuzzy_search_limit = 1",
        ],
        (),
    ),
    "search_path hijack": (["search_path = pg_temp, hostile, pg_catalog, public"], ()),
    "serializable, read only": (
        ["default_transaction_isolation = serializable", "default_transaction_read_only = on"],
        (psycopg.errors.ReadOnlySqlTransaction,),
    ),
    "statement_timeout 1ms": (["statement_timeout = 1"], (psycopg.errors.QueryCanceled,)),
    "lock_timeout 1ms, idle timeouts": (
        [
            "lock_timeout = 1",
            "idle_in_transaction_session_timeout = 60000",
            "idle_session_timeout = 60000",
        ],
        (),
    ),
}

# what the hostile schema puts in front: same-named functions and operators, all raising
HOSTILE_FUNCTIONS = [
    ("btrim", "text", "text"),
    ("lower", "text", "text"),
    ("length", "text", "integer"),
    ("octet_length", "text", "integer"),
    ("jsonb_typeof", "jsonb", "text"),
    ("cardinality", "anyarray", "integer"),
    ("array_position", "anycompatiblearray, anycompatible", "integer"),
    ("to_tsvector", "regconfig, text", "tsvector"),
    ("to_tsvector", "text", "tsvector"),
    ("websearch_to_tsquery", "regconfig, text", "tsquery"),
    ("current_setting", "text, boolean", "text"),
    ("set_config", "text, text, boolean", "text"),
    ("embed_dense", "text", "public.vector"),
    ("embed_sparse", "text", "public.sparsevec"),
    ("vector_dims", "public.vector", "integer"),
    ("l2_normalize", "public.vector", "public.vector"),
    ("sparse_dot", "public.sparsevec, public.sparsevec", "double precision"),
    ("hybrid_search_load_python", "", "text"),
]
HOSTILE_OPERATORS = [
    ("<=>", "public.vector", "public.vector", "double precision"),
    ("<#>", "public.sparsevec", "public.sparsevec", "double precision"),
    ("@>", "jsonb", "jsonb", "boolean"),
    ("@@", "tsvector", "tsquery", "boolean"),
    ("=", "text", "text", "boolean"),
    ("=", "bigint", "bigint", "boolean"),
]


def _hostile_schema(owner_conn):
    """As the adversary: a schema of same-named functions and operators that raise, and
    temporary tables named as ours (temporary tables come first for unqualified names
    unless pg_temp is put last, as our functions do)."""
    owner_conn.execute("create schema hostile")
    for i, (name, args, returns) in enumerate(HOSTILE_FUNCTIONS):
        owner_conn.execute(
            f"create function hostile.{name}({args}) returns {returns} language plpgsql"
            f" as $$ begin raise exception 'hijacked: {name} ({i})'; end $$"
        )
    for i, (op, left, right, returns) in enumerate(HOSTILE_OPERATORS):
        owner_conn.execute(
            f"create function hostile.op{i}({left}, {right}) returns {returns} language plpgsql"
            f" as $$ begin raise exception 'hijacked: operator {op}'; end $$"
        )
        owner_conn.execute(
            f"create operator hostile.{op} (leftarg = {left}, rightarg = {right},"
            f" function = hostile.op{i})"
        )


def _temporary_objects(conn):
    """The role's temporary tables: the evaluation's queries and judgements, and decoys
    named as the extension's tables."""
    conn.execute(
        "create temp table questions (id text, query text);"
        " insert into questions values ('q1', 'sales'), ('q2', 'weather');"
        " create temp table judged (query_id text, doc_id bigint, relevance int);"
        " insert into judged values ('q1', 1, 1), ('q1', 2, 1), ('q2', 3, 1);"
        " create temp table documents (id bigint, content text, metadata jsonb);"
        " insert into documents values (1, 'decoy', '{}');"
        " create temp table hybrid_search_settings as select 'decoy' as model;"
        " create temp table hybrid_search_config (model text);"
    )


def _vacuum(dsn):
    """The BM25 index counts rows deleted, updated away or written by an aborted
    transaction until VACUUM: keyword scores are compared from a vacuumed table."""
    with connect(dsn) as owner:
        owner.execute("vacuum documents")


def _run(conn, schema, name):
    cur = conn.execute(CALLS[name].format(s=schema))
    return cur.fetchall()


@pytest.fixture(scope="module")
def adversary(bare_dsn):
    """(dsn, schema, the role's connection, baseline results): a role granted 'write', with
    the documents, its hostile schema and temporary tables, and every call's result."""
    with connect(bare_dsn) as owner:
        schema = owner.execute(
            "select extnamespace::regnamespace::text from pg_extension"
            " where extname = 'hybrid_search'"
        ).fetchone()[0]
        owner.execute("truncate documents restart identity")
        owner.execute("insert into documents (content) select unnest(%s::text[])", [DOCUMENTS])
        owner.execute("select hybrid_search_refresh()")
        owner.execute("vacuum documents")
        owner.execute(sql.SQL("drop schema if exists hostile cascade"))
        owner.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(ROLE)))
        owner.execute(sql.SQL("create role {}").format(sql.Identifier(ROLE)))
        owner.execute("select hybrid_search_grant(%s::regrole, 'write')", [ROLE])
        owner.execute(
            sql.SQL("grant create on database adversarial to {}").format(sql.Identifier(ROLE))
        )
        conn = connect(bare_dsn)
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(ROLE)))
        _hostile_schema(conn)
        _temporary_objects(conn)
        baseline = {name: _run(conn, schema, name) for name in CALLS}
        yield bare_dsn, schema, conn, baseline
        conn.close()
        owner.execute("drop schema hostile cascade")
        owner.execute("select hybrid_search_revoke(%s::regrole)", [ROLE])
        owner.execute(sql.SQL("drop owned by {}").format(sql.Identifier(ROLE)))
        owner.execute(sql.SQL("drop role {}").format(sql.Identifier(ROLE)))


@pytest.fixture(scope="module")
def watch(adversary):
    watch = Watch(adversary[0])
    yield watch
    watch.close()


def test_the_baseline_is_meaningful(adversary):
    _, _, _, baseline = adversary
    assert len(baseline["dense_search(text)"]) == 3
    assert baseline["keyword_search"] and baseline["colbert_rerank"]
    assert baseline["write and embed"] == [(1,)] and baseline["delete"] == [(1,)]
    assert {m for m, _, _ in baseline["evaluate"]} >= {"dense", "keyword", "hybrid rrf"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_odd_settings_around_every_function(adversary, watch, case):
    dsn, schema, conn, baseline = adversary
    settings, allowed = CASES[case]
    _vacuum(dsn)
    conn.execute("; ".join(f"set {s}" for s in settings))
    differ = {}
    try:
        for name in CALLS:
            try:
                result = _run(conn, schema, name)
            except allowed:
                continue
            if allowed and name in WRITES:
                continue  # the write before it may have been the one refused
            if result != baseline[name]:
                differ[name] = (result, baseline[name])
    finally:
        conn.execute("reset all")
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(ROLE)))
        _run(conn, schema, "delete")  # whatever a cancelled call left
    watch.assert_no_crash(case)
    assert differ == {}, f"{case}: results changed"
    # the role's backend is intact: the baseline again, settings gone
    _vacuum(dsn)
    for name in ("embed_dense", "hybrid_search(text)", "keyword_search", "evaluate"):
        assert _run(conn, schema, name) == baseline[name], f"after {case}: {name}"
    watch.assert_check_clean(case)


def test_role_switches_and_savepoint_rollbacks_around_embedding(adversary, watch):
    dsn, schema, conn, baseline = adversary
    conn.execute("reset role")  # the owner's backend, switching to the role and back
    try:
        with conn.transaction():
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(ROLE)))
            assert _run(conn, schema, "embed_dense") == baseline["embed_dense"]
            for _ in range(3):
                with pytest.raises(psycopg.errors.InvalidParameterValue), conn.transaction():
                    _run(conn, schema, "hybrid_search(text)")  # in a savepoint that fails
                    conn.execute(f"select * from {schema}.hybrid_search('  ', 3)")
                try:  # a savepoint whose embedding may be cancelled
                    with conn.transaction():
                        conn.execute("set local statement_timeout = 1")
                        _run(conn, schema, "embed_batch")
                        conn.execute("set local statement_timeout = 0")
                except psycopg.errors.QueryCanceled:
                    pass
                assert _run(conn, schema, "embed_batch") == baseline["embed_batch"]
            conn.execute("reset role")
            with conn.transaction():  # a write that embeds, rolled back
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(ROLE)))
                assert _run(conn, schema, "write and embed") == [(1,)]
                conn.execute("savepoint again")
                assert _run(conn, schema, "change and re-embed") == [(1,)]
                conn.execute("rollback to savepoint again")
                embedded = conn.execute(
                    f"select dense is not null and sparse is not null from {schema}.documents"
                    " where content = 'an adversarial write'"
                ).fetchall()
                assert embedded == [(True,)]
                raise psycopg.Rollback
            assert _run(conn, schema, "hybrid_search(text)") == baseline["hybrid_search(text)"]
        watch.assert_no_crash("savepoints")
        assert (
            conn.execute(
                f"select count(*) from {schema}.documents"
                " where content like 'an adversarial write%'"
            ).fetchone()[0]
            == 0
        )
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(ROLE)))
        _vacuum(dsn)
        assert _run(conn, schema, "keyword_search") == baseline["keyword_search"]
    finally:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(ROLE)))
    watch.assert_no_crash("role switches")
    watch.assert_check_clean("role switches")


def test_cursors_and_prepared_statements_over_the_searches(adversary, watch):
    dsn, schema, conn, baseline = adversary
    _vacuum(dsn)
    expected = baseline["hybrid_search(text)"]
    search = CALLS["hybrid_search(text)"].format(s=schema)
    with conn.transaction():
        conn.execute(f"declare c scroll cursor for {search}")
        first = conn.execute("fetch 1 from c").fetchall()
        conn.execute("reset role")  # a role switch between fetches
        rest = conn.execute("fetch all from c").fetchall()
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(ROLE)))
        assert first + rest == expected
        assert conn.execute("fetch backward all from c").fetchall() == expected[::-1]
        conn.execute("close c")
    with conn.transaction():
        keyword = CALLS["keyword_search"].format(s=schema)
        conn.execute(f"declare held cursor with hold for {keyword}")
    assert conn.execute("fetch all from held").fetchall() == baseline["keyword_search"]
    conn.execute("close held")
    # a server-side cursor fetched in pieces
    with conn.transaction(), conn.cursor(name="pieces") as cur:
        cur.itersize = 1
        cur.execute(CALLS["sparse_search(text)"].format(s=schema))
        assert list(cur) == baseline["sparse_search(text)"]
    # prepared statements: the plan cache switches to a generic plan after five runs
    conn.execute(f"prepare p (text, integer) as select id, rank from {schema}.dense_search($1, $2)")
    conn.execute(
        f"prepare q (text) as select id, round(score::numeric, 6)"
        f" from {schema}.hybrid_search($1, {schema}.embed_dense($1), {schema}.embed_sparse($1),"
        " 3, filter => '{}')"
    )
    for mode in ("auto", "force_generic_plan", "force_custom_plan"):
        conn.execute(f"set plan_cache_mode = {mode}")
        for _ in range(7):
            assert (
                conn.execute("execute p ('sales', 3)").fetchall() == baseline["dense_search(text)"]
            )
            assert (
                conn.execute("execute q ('sales')").fetchall() == baseline["hybrid_search(vectors)"]
            )
    conn.execute("reset plan_cache_mode")
    conn.execute("deallocate p; deallocate q")
    # psycopg's own prepared statements (protocol level)
    for _ in range(6):
        keyword = conn.execute(CALLS["keyword_search"].format(s=schema), prepare=True)
        assert keyword.fetchall() == baseline["keyword_search"]
    watch.assert_no_crash("cursors and prepared statements")
    watch.assert_check_clean("cursors and prepared statements")
