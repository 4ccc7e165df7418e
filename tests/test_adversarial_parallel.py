"""Parallel mode cannot crash the server (issue 13, defect 1).

On PostgreSQL 15, plpy.execute starts a subtransaction before PL/Python's error
handling begins, and that raises ERROR in parallel mode: the longjmp goes through
the Python interpreter and leaves it corrupted ("SystemError: unknown opcode", then
signal 11 in the backend, and the postmaster restarts every connection). Two
defences, each tested here: every function that runs SQL through plpy (and every
function that calls one) is PARALLEL UNSAFE, so the planner never enters parallel
mode around them; and a PL/Python function of ours reached in parallel mode anyway
(through a user's function mislabelled PARALLEL SAFE) raises a clean error before
any SQL, on servers with and without preloading, in a fresh backend and in one that
has loaded our module.
"""

import re

import psycopg
import pytest
from adversarial import Watch
from helpers import connect
from psycopg import sql

DOCUMENTS = ["quarterly sales grew in the north", "the sales team met", "weather report"]

# every parallel setting a non-superuser can change, at its most eager
EAGER_PARALLEL = (
    "set force_parallel_mode = on; set parallel_setup_cost = 0; set parallel_tuple_cost = 0;"
    " set min_parallel_table_scan_size = 0; set min_parallel_index_scan_size = 0;"
    " set max_parallel_workers_per_gather = 4"
)


def _documents(conn):
    conn.execute("truncate documents restart identity")
    conn.execute("insert into documents (content) select unnest(%s::text[])", [DOCUMENTS])
    conn.execute("select hybrid_search_refresh()")


@pytest.fixture(scope="module")
def bare_documents(bare_dsn):
    """The server without preloading, with the documents (once: each new backend there
    imports the model stack itself, which takes seconds)."""
    with connect(bare_dsn) as conn:
        _documents(conn)
    return bare_dsn


def _server(request, name):
    if name == "preloaded":
        db = request.getfixturevalue("db")
        _documents(db)
        dsn = db.info.dsn
    else:
        dsn = request.getfixturevalue("bare_documents")
    watch = Watch(dsn)
    yield dsn, watch
    watch.assert_no_crash("after the test")
    watch.close()


@pytest.fixture(params=["preloaded", "not preloaded"])
def server(request):
    """(dsn, watch) of the suite's preloading server or of one without preloading."""
    yield from _server(request, request.param)


@pytest.fixture
def preloaded(request):
    yield from _server(request, "preloaded")


def test_the_reported_sequence_runs_and_keeps_the_server_up(server):
    dsn, watch = server
    with connect(dsn) as conn:  # a backend that has not loaded our module yet
        conn.execute("set force_parallel_mode = on")
        found = conn.execute(
            "select count(*) from dense_search((select embed_dense('sales')), 3)"
        ).fetchone()[0]
        assert found == 3
        conn.execute("reset force_parallel_mode")
        assert conn.execute("select vector_dims(embed_dense('sales'))").fetchone()[0] > 0
        assert conn.execute("select count(*) from hybrid_search('sales', 3)").fetchone()[0] == 3
        assert conn.execute("select count(*) from query_tokens('hello')").fetchone()[0] > 0
    watch.assert_no_crash("the reported sequence")


def test_every_search_gives_the_same_rows_under_eager_parallel_settings(preloaded):
    dsn, watch = preloaded
    queries = [
        "select id, rank from dense_search('sales', 3)",
        "select id, rank from sparse_search('sales', 3)",
        "select id, rank from keyword_search('sales', 3)",
        "select id, rank from keyword_search_scan('sales', 3)",
        "select id, dense_rank, sparse_rank, keyword_rank from hybrid_search('sales', 3)",
        "select id from hybrid_search('sales', (select embed_dense('sales')),"
        " (select embed_sparse('sales')), 3)",
        "select token from sparse_explain('sales')",
        "select count(*) from embed_batch(array['a', 'b'])",
    ]
    with connect(dsn) as conn:
        expected = [conn.execute(q).fetchall() for q in queries]
    with connect(dsn) as conn:
        conn.execute(EAGER_PARALLEL)
        assert [conn.execute(q).fetchall() for q in queries] == expected
        conn.execute("set max_parallel_workers = 0")  # the leader runs the plan itself
        assert [conn.execute(q).fetchall() for q in queries] == expected
    watch.assert_no_crash("eager parallel settings")


WRAPPERS = {
    "sql": "create function pg_temp.wrapped(t text) returns text language sql parallel safe"
    " as $$ select {schema}.embed_dense(t)::text $$",
    "plpgsql": "create function pg_temp.wrapped(t text) returns text language plpgsql"
    " parallel safe as $$ begin return {schema}.embed_dense(t)::text; end $$",
}


@pytest.mark.parametrize("language", sorted(WRAPPERS))
@pytest.mark.parametrize("module_loaded", [False, True], ids=["fresh backend", "module loaded"])
@pytest.mark.parametrize("runner", ["leader", "worker"])
def test_a_mislabelled_wrapper_gets_a_clean_error(preloaded, language, module_loaded, runner):
    """A role's own PARALLEL SAFE function around embed_dense (any role may create one in
    pg_temp): our function then runs in parallel mode, in the leader or in a worker."""
    _refused_then_fine(*preloaded, language, module_loaded, runner)


def test_a_mislabelled_wrapper_gets_a_clean_error_without_preloading(request):
    """The same in a fresh backend of a server without preloading (the path where the
    backend must import everything itself)."""
    for dsn, watch in _server(request, "not preloaded"):
        _refused_then_fine(dsn, watch, "sql", False, "leader")


def _refused_then_fine(dsn, watch, language, module_loaded, runner):
    with connect(dsn) as conn:
        schema = conn.execute(
            "select extnamespace::regnamespace::text from pg_extension"
            " where extname = 'hybrid_search'"
        ).fetchone()[0]
        conn.execute(sql.SQL(WRAPPERS[language].format(schema=schema)))
        if module_loaded:
            conn.execute("select embed_dense('warm up')")
        conn.execute(EAGER_PARALLEL)
        if runner == "leader":
            conn.execute("set max_parallel_workers = 0")
        with pytest.raises(psycopg.errors.InvalidTransactionState) as raised:
            conn.execute("select pg_temp.wrapped('sales')")
        message = raised.value.diag.message_primary
        assert "cannot run during a parallel operation" in message  # refused before any SQL
        watch.assert_no_crash("the refused call")
        # the backend's interpreter is intact: the same calls work outside parallel mode
        conn.execute("reset all")
        for _ in range(3):
            assert conn.execute("select pg_temp.wrapped('sales')").fetchone()[0].startswith("[")
            assert conn.execute("select count(*) from query_tokens('hello')").fetchone()[0] > 0
    watch.assert_no_crash("calls after the refused one")


# What the audit of every function's body found (sql/*.sql); a new function that is not
# PARALLEL UNSAFE, or not VOLATILE, must be audited and added here.
PARALLEL_SAFE = {
    "_check_table_columns(text,text,regclass,name[])",
    "_check_query_model(text)",  # reads settings and documents
    "_check_query_text(text,text)",
    "_check_query_vector(text,boolean)",
    "_check_search_arguments(text,integer,jsonb)",
    "_check_filter(text,jsonb)",
    "_bm25_visible_statistics_add(bigint[],tsvector,tsvector)",
    "_bm25_visible_statistics(tsvector,tsvector)",  # the aggregate of the above
    "_dense_index_halfvec_dimensions()",  # reads the catalog
    "_dense_index_is_graph()",  # reads the catalog
    "_role_functions(text)",
    "_sparse_index_relations()",
    "_token_stats_rows()",  # reads documents, no PL/Python
    "sparse_dot(jsonb,jsonb)",
    "sparse_dot(sparsevec,sparsevec)",
    "sparse_entries(sparsevec)",
    "sparse_to_jsonb(sparsevec)",
    "bm25query_in(cstring)",
    "bm25query_out(bm25query)",
    "bm25_distance(tsvector,bm25query)",
    "_bm25query_statistics(tsvector,double precision,double precision,bigint,double precision,"
    "text[],bigint[])",
    "_is_coordinator()",  # reads hybrid_search_coordinator
    "_coordinator_route(jsonb)",  # reads the shard tables, satisfies_hash_partition
    "_shard_documents(bigint[],jsonb)",  # reads documents
    "_coordinator_tenant(text,name)",  # reads hybrid_search_coordinator_tenants
    "_bm25query_rows(tsvector,double precision,double precision,jsonb)",  # reads documents
}
PARALLEL_RESTRICTED = {
    "hybrid_search_score_run(hybrid_search_run_row[],regclass,integer,text[])",  # qrels may be
    # a temporary table, which parallel workers cannot read
    # under row-level security these evaluate the policies' stable functions (a user's may
    # be parallel unsafe) to prove a partial index's predicate
    "_bm25query(regclass,tsvector,double precision,double precision)",
    "_bm25_policy_index(regclass)",
    "_bm25query_policy_rows(regclass,tsvector,double precision,double precision)",
    "to_bm25query(regclass,text,regconfig)",  # calls _bm25query
}
IMMUTABLE = {
    "_check_query_text(text,text)",
    "_check_query_vector(text,boolean)",
    "_check_search_arguments(text,integer,jsonb)",
    "_bm25_visible_statistics_add(bigint[],tsvector,tsvector)",
    "_bm25_visible_statistics(tsvector,tsvector)",
    "_check_filter(text,jsonb)",
    "_role_functions(text)",
    "_filter_index_names(text,text)",
    "sparse_dot(jsonb,jsonb)",
    "sparse_dot(sparsevec,sparsevec)",
    "sparse_entries(sparsevec)",
    "sparse_to_jsonb(sparsevec)",
    "bm25query_in(cstring)",
    "bm25query_out(bm25query)",
    "bm25_distance(tsvector,bm25query)",
    "_bm25query_statistics(tsvector,double precision,double precision,bigint,double precision,"
    "text[],bigint[])",
}


def _functions(conn):
    return conn.execute(
        "select p.oid::regprocedure::text, p.proname, l.lanname, p.provolatile, p.proparallel,"
        " p.proleakproof, p.prosrc"
        " from pg_proc as p"
        " join pg_depend as d on d.classid = 'pg_proc'::regclass and d.objid = p.oid"
        " and d.deptype = 'e'"
        " join pg_extension as e on e.oid = d.refobjid and e.extname = 'hybrid_search'"
        " join pg_language as l on l.oid = p.prolang"
    ).fetchall()


def test_function_labels_match_what_their_bodies_do(db):
    functions = _functions(db)
    assert len(functions) > 50
    assert [f[0] for f in functions if f[5]] == [], "no function of ours is LEAKPROOF"
    python = {f[0] for f in functions if f[2] == "plpython3u"}
    assert python and all(f[4] == "u" for f in functions if f[0] in python), (
        "plpy runs SQL in subtransactions: every PL/Python function is PARALLEL UNSAFE"
    )
    # whatever calls an unsafe function of ours (or set_config, or opens a subtransaction
    # with an EXCEPTION block) is unsafe too, to a fixpoint
    unsafe_names = {f[1] for f in functions if f[4] == "u"} | {"set_config"}
    changed = True
    while changed:
        changed = False
        for signature, name, language, _, parallel, _, source in functions:
            body = re.sub(r"'(?:[^']|'')*'", "''", source)  # not the names in messages
            calls = {n for n in unsafe_names if re.search(rf"\b{re.escape(n)}\s*\(", body)}
            has_exception_block = language == "plpgsql" and re.search(
                r"\bexception\s+when\b", body, re.IGNORECASE
            )
            if (calls or has_exception_block) and name not in unsafe_names:
                assert parallel == "u", f"{signature} is {parallel} but calls {calls}"
                unsafe_names.add(name)
                changed = True
    assert {f[0] for f in functions if f[4] == "s"} == PARALLEL_SAFE
    assert {f[0] for f in functions if f[4] == "r"} == PARALLEL_RESTRICTED
    assert {f[0] for f in functions if f[3] == "i"} == IMMUTABLE
    # a function that writes is VOLATILE
    writes = re.compile(r"\b(insert\s+into|update\s+\S+\s+set|delete\s+from|truncate)\b", re.I)
    assert [f[0] for f in functions if f[3] != "v" and writes.search(f[6])] == []


def test_the_preamble_of_every_python_function_refuses_parallel_mode_before_any_sql(db):
    """The one statement a body runs before our module is loaded is guarded too."""
    for signature, _, language, _, _, _, body in _functions(db):
        if language != "plpython3u":
            continue
        before_sql = body.split("plpy.execute(")[0]
        assert "IsInParallelMode()" in before_sql, signature


PYTHON_FRAMES = """create function pg_temp.python_frames() returns text language plpython3u
as $$
import sys
names, frame = [], sys._getframe()
while frame is not None:
    names.append(frame.f_code.co_name)
    frame = frame.f_back
return ",".join(names)
$$"""


def test_errors_inside_our_python_functions_leave_the_interpreter_intact(request):
    """What an ERROR that jumped through Python left behind was a stale chain of frames
    (walking it killed the backend). After each kind of error raised inside our PL/Python
    functions, a new PL/Python call sees only its own frames."""
    for dsn, watch in _server(request, "not preloaded"):
        with connect(dsn) as conn:
            conn.execute(PYTHON_FRAMES)
            conn.execute(sql.SQL(WRAPPERS["sql"].format(schema="public")))
            clean = conn.execute("select pg_temp.python_frames()").fetchone()[0]
            assert clean.split(",")[1:] == ["<module>"]
            errors = {
                "refused in parallel mode": (
                    EAGER_PARALLEL + "; set max_parallel_workers = 0",
                    "select pg_temp.wrapped('sales')",
                ),
                "an SQL error inside plpy.execute": (
                    "set default_transaction_read_only = on",
                    "select hybrid_search_rebuild_sparse_index()",
                ),
                "plpy.error": (
                    "select hybrid_search_configure(max_content_chars => 5)",
                    "select embed_dense('longer than five')",
                ),
                "a cancel inside plpy.execute": (
                    "set statement_timeout = 1",
                    "select count(*) from embed_batch(array_fill('sales'::text, array[3000]))",
                ),
            }
            for case, (prepare, statement) in errors.items():
                conn.execute(prepare)
                with pytest.raises(psycopg.Error):
                    conn.execute(statement)
                conn.execute("reset all")
                conn.execute("select hybrid_search_configure(max_content_chars => 1000000)")
                assert conn.execute("select pg_temp.python_frames()").fetchone()[0] == clean, case
                assert conn.execute("select count(*) from query_tokens('hello')").fetchone()[0]
                watch.assert_no_crash(case)
