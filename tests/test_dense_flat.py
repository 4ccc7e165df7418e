"""The dense_flat index access method: ORDER BY v <=> q (cosine distance) through the
index equals a brute force over the same rows (ORDER BY (v <=> q) + 0, which no
index serves), distances and ids, ties included, for k up to 1,000; on random and
clustered corpora of 32 to 1,024 dimensions with duplicates, NULLs and a zero vector;
under inserts, updates, deletes, VACUUM and a concurrent writer; with filter columns
(jsonb @> found by a GIN index, int4 = on an expression found by a btree, a lossy
bitmap), row-level security, a kill -9 during a COPY, a hot standby and
pg_dump/pg_restore; and hostile inputs fail with pgvector's or the index's errors."""

import contextlib
import json
import math
import re
import subprocess
import time

import numpy as np
import psycopg
import pytest
from helpers import (
    connect,
    create_database,
    insert,
    kill_midway,
    own_cluster,
    own_primary_and_standby,
    read_while_writing,
)
from hybrid_search_installer import database
from hybrid_search_installer.layout import pg_bin

KS = [1, 2, 10, 57, 100, 500, 1000]
INDEX = "df_items_v_idx"
# dense_flat is never planned without a condition on a filter column: the tests'
# indexes have meta as one, and their "unfiltered" queries a condition every row meets
# (every row has meta), with no index to find its rows: every row is scored
COLUMNS = "v vector_cosine_ops, meta jsonb_filter_ops"
ALL = "meta @> '{}'"


def random_vectors(rng, n, dim, kind="random"):
    """n float32 vectors (random normal, or around 16 centres), with about 1% NULLs,
    2% duplicates of earlier rows, 1% earlier rows times a power of two (the very same
    cosine distance to any query), 1% mostly zero with a few large components, and
    one zero vector in the middle."""
    if kind == "clustered":
        centres = rng.standard_normal((16, dim))
        base = centres[rng.integers(0, 16, n)] + 0.05 * rng.standard_normal((n, dim))
    else:
        base = rng.standard_normal((n, dim))
    out = list(base.astype(np.float32))
    for i in range(1, n):
        r = rng.random()
        earlier = out[int(rng.integers(0, i))]
        if r < 0.01:
            out[i] = None
        elif r < 0.03:
            out[i] = earlier
        elif r < 0.04 and earlier is not None:
            out[i] = (earlier * np.float32(2.0 ** int(rng.integers(-3, 4)))).astype(np.float32)
        elif r < 0.05:
            spiky = np.zeros(dim, np.float32)
            spiky[rng.integers(0, dim, 3)] = rng.standard_normal(3) * 100
            out[i] = spiky
    out[n // 2] = np.zeros(dim, np.float32)
    return out


def literal(vec):
    """pgvector's text form of a float32 vector, each component read back exactly."""
    if vec is None:
        return None
    return "[" + ",".join(map(repr, np.asarray(vec, np.float32).tolist())) + "]"


def queries(rng, rows, dim, n=6):
    """Random vectors, rows of the table (distance 0 to them and their copies), a
    negated row (distance 2) and a mean of rows."""
    present = [v for v in rows.values() if v is not None and np.any(v)]
    picked = [present[int(rng.integers(0, len(present)))] for _ in range(3)]
    out = [rng.standard_normal(dim).astype(np.float32) for _ in range(max(n - 4, 1))]
    out += [picked[0], -picked[1], np.mean(picked, axis=0).astype(np.float32)]
    out += [picked[2] + np.float32(0.01) * rng.standard_normal(dim).astype(np.float32)]
    return [np.asarray(q, np.float32) for q in out[:n]]


def order_key(d):
    """A float8's place in ORDER BY ... ASC: numbers, then NaN, then NULL."""
    if d is None:
        return (2, 0.0)
    if math.isnan(d):
        return (1, 0.0)
    return (0, d)


def plan_of(conn, sql, params):
    return "\n".join(r[0] for r in conn.execute("explain (costs off) " + sql, params))


def by_index(conn, query, k, where=ALL, index=INDEX, table="df_items"):
    """The index's top k (id, distance), having checked that the plan is its scan."""
    sql = (
        f"select id, v <=> %s::vector from {table} where {where} order by v <=> %s::vector limit %s"
    )
    params = [literal(query), literal(query), k]
    plan = plan_of(conn, sql, params)
    assert f"Index Scan using {index} " in plan, plan
    return conn.execute(sql, params).fetchall()


@contextlib.contextmanager
def no_index_scans(conn):
    conn.execute("set enable_indexscan = off")
    conn.execute("set enable_seqscan = on")
    try:
        yield
    finally:
        conn.execute("reset enable_indexscan")
        conn.execute("set enable_seqscan = off")


def brute_force(conn, query, k, where=ALL, index=INDEX, table="df_items"):
    """Every visible row's distance {id: d} computed without the index, and the
    sequential scan's top k (ORDER BY (v <=> q) + 0)."""
    with no_index_scans(conn):
        sql = (
            f"select id, (v <=> %s::vector) + 0 from {table} where {where}"
            " order by (v <=> %s::vector) + 0 limit %s"
        )
        params = [literal(query), literal(query), k]
        assert index not in plan_of(conn, sql, params)
        top = conn.execute(sql, params).fetchall()
        every = conn.execute(
            f"select id, v <=> %s::vector from {table} where {where}", [literal(query)]
        ).fetchall()
    return dict(every), top


def same_distance(a, b):
    return order_key(a) == order_key(b)


def assert_same_top_k(found, distances, k):
    """found is a correct top k of the rows whose distances are given: as many rows as
    there are (up to k), each once and at its own distance, in ascending order (NaN,
    then NULL, last); every row closer than the k-th is in it, and at the k-th
    distance only rows that have it."""
    expected = sorted(distances.values(), key=order_key)[:k]
    assert len(found) == len(expected), (len(found), len(expected))
    ids = [i for i, _ in found]
    assert len(set(ids)) == len(ids), "a row returned twice"
    for i, d in found:
        assert i in distances, f"row {i} is not one of the rows the query sees"
        assert same_distance(d, distances[i]), (i, d, distances[i])
    got = [order_key(d) for _, d in found]
    assert got == [order_key(d) for d in expected], "not the brute force's distances in order"
    if not found:
        return
    last = order_key(found[-1][1])
    closer = {i for i, d in distances.items() if order_key(d) < last}
    assert closer <= set(ids), f"rows closer than the k-th left out: {sorted(closer - set(ids))}"


def assert_exact(conn, query, k, where=ALL, index=INDEX, table="df_items"):
    """The index's top k is the brute force's (the sequential scan's distances in
    order, the same rows but for a tie at the k-th distance)."""
    found = by_index(conn, query, k, where, index, table)
    distances, top = brute_force(conn, query, k, where, index, table)
    assert [order_key(d) for _, d in top] == [
        order_key(d) for d in sorted(distances.values(), key=order_key)[:k]
    ]
    assert_same_top_k(found, distances, k)
    return found


def copy_rows(conn, vectors, start=0, table="df_items"):
    """Rows id, tenant (id % 10), meta {"tenant": id % 10, "odd": id % 2 = 1}, v."""
    with conn.cursor().copy(f"copy {table} (id, tenant, meta, v) from stdin") as copy:
        for i, v in enumerate(vectors, start=start):
            meta = json.dumps({"tenant": i % 10, "odd": i % 2 == 1})
            copy.write_row((i, i % 10, meta, literal(v)))


def create_items(conn, vectors, columns=COLUMNS, dim=None):
    """df_items: the vectors (tenant id % 10) under a dense_flat index, with sequential
    scans off; its rows by id."""
    conn.execute("drop table if exists df_items")
    typmod = f"({dim})" if dim else ""
    # no autovacuum: the tests VACUUM when they mean to
    conn.execute(
        "create table df_items (id int primary key, tenant int, meta jsonb,"
        f" v vector{typmod}) with (autovacuum_enabled = false)"
    )
    copy_rows(conn, vectors)
    conn.execute(f"create index {INDEX} on df_items using dense_flat ({columns})")
    conn.execute("analyze df_items")
    prefer_index_scans(conn)
    return dict(enumerate(vectors))


def prefer_index_scans(conn):
    """Plans without a sequential scan, and without the other choice for a filter: a
    bitmap scan of the filter's index and a sort (cheaper for a few hundred rows)."""
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        conn.execute(f"set {setting} = off")


@pytest.fixture
def items(db):
    """A table of 2,000 random 64-dimensional vectors with a dense_flat index, and its
    rows; a random generator. Plans prefer index scans."""
    rng = np.random.default_rng(21)
    rows = create_items(db, random_vectors(rng, 2000, 64))
    yield db, rows, rng
    db.execute("reset role")
    db.execute("reset all")
    db.execute("drop table if exists df_items")


def has_check(conn):
    return conn.execute("select to_regproc('dense_flat_check') is not null").fetchone()[0]


def check(conn, index=INDEX):
    """dense_flat_check's report, or None where the function does not exist (yet)."""
    if not has_check(conn):
        return None
    report = conn.execute("select dense_flat_check(%s)", [index]).fetchone()[0]
    return json.loads(report) if isinstance(report, str) else report


def assert_consistent(conn, index=INDEX):
    report = check(conn, index)
    assert report is None or report["consistent"], report


def test_the_comparison_catches_wrong_answers():
    """assert_same_top_k, which every test relies on, fails on a wrong order, a row
    left out for a farther one, a row the query cannot see, a wrong distance, a
    short answer and a row twice; and accepts any of the rows tied at the k-th."""
    distances = {1: 0.1, 2: 0.2, 3: 0.2, 4: 0.3, 5: float("nan"), 6: None}
    assert_same_top_k([(1, 0.1), (3, 0.2)], distances, 2)
    assert_same_top_k([(1, 0.1), (2, 0.2)], distances, 2)
    assert_same_top_k(
        [(1, 0.1), (2, 0.2), (3, 0.2), (4, 0.3), (5, float("nan")), (6, None)], distances, 9
    )
    for wrong in (
        [(2, 0.2), (1, 0.1)],  # order
        [(1, 0.1), (4, 0.3)],  # 2 and 3 are closer
        [(1, 0.1), (7, 0.2)],  # not a row of the query's
        [(1, 0.1), (4, 0.2)],  # 4's distance is 0.3
        [(1, 0.1)],  # short
        [(1, 0.1), (1, 0.1)],  # twice
    ):
        with pytest.raises(AssertionError):
            assert_same_top_k(wrong, distances, 2)
    with pytest.raises(AssertionError):  # 3 is closer than the 4th row
        assert_same_top_k([(1, 0.1), (2, 0.2), (4, 0.3), (5, float("nan"))], distances, 4)
    with pytest.raises(AssertionError):  # NaN sorts before NULL
        assert_same_top_k(
            [(1, 0.1), (2, 0.2), (3, 0.2), (4, 0.3), (6, None), (5, float("nan"))], distances, 6
        )


@pytest.mark.parametrize(
    ("dim", "kind"), [(32, "random"), (32, "clustered"), (384, "clustered"), (1024, "random")]
)
def test_exact_for_every_k(db, dim, kind):
    """Random and clustered vectors, with duplicates, copies times a power of two
    (exact ties), NULLs and a zero vector (NaN, after every number): the index's rows
    are the brute force's for every k."""
    rng = np.random.default_rng(dim)
    rows = create_items(db, random_vectors(rng, 2000, dim, kind))
    try:
        for query in queries(rng, rows, dim):
            for k in KS:
                assert_exact(db, query, k)
        # every row: the zero vector's NaN after every number, then the rows without one
        found = assert_exact(db, queries(rng, rows, dim, 1)[0], 2000)
        nulls = sum(v is None for v in rows.values())
        assert len(found) == 2000 and nulls > 0
        assert math.isnan(found[-nulls - 1][1]) and found[-1][1] is None
        assert_consistent(db)
    finally:
        db.execute("drop table df_items")


def test_copies_of_a_row_tie_and_all_come_first(items):
    """A query equal to a row: the row, its duplicates and its multiples by powers of
    two are at the same distance (about 0), and all of them come before any other row."""
    conn, rows, _ = items
    base = rows[7]
    copies = {}
    for j, scale in enumerate([1, 1, 2, 0.5, 64, 1 / 1024]):
        copies[3000 + j] = (base * np.float32(scale)).astype(np.float32)
    copy_rows(conn, list(copies.values()), start=3000)
    expected = {7, *copies} | {i for i, v in rows.items() if v is not None and v is base}
    found = assert_exact(conn, base, len(expected))
    assert {i for i, _ in found} == expected
    assert len({d for _, d in found}) == 1


def test_zero_query_vector_returns_rows_at_nan(items):
    """A zero query vector: every distance is NaN (pgvector), so any k rows with a
    vector will do, each once, then the rows without one, as a sequential scan's."""
    conn, rows, _ = items
    with_vector = sum(v is not None for v in rows.values())
    for k in [1, 10, 3000]:
        found = by_index(conn, np.zeros(64, np.float32), k)
        assert all(math.isnan(d) for _, d in found[:with_vector])
        assert all(d is None for _, d in found[with_vector:])
        assert len({i for i, _ in found}) == len(found) == min(k, len(rows))


def test_rebuilds_keep_the_index_exact(items, dsn):
    """VACUUM FULL, REINDEX, REINDEX CONCURRENTLY and CREATE INDEX CONCURRENTLY (its
    validation pass reads the index through bulk delete) give exact indexes; a partial
    index ranks only its rows."""
    conn, rows, rng = items
    qs = queries(rng, rows, 64, 2)
    conn.execute("delete from df_items where id % 4 = 0")
    for statement in (
        "vacuum full df_items",
        f"reindex index {INDEX}",
        f"reindex index concurrently {INDEX}",
    ):
        conn.execute(statement)
        for query in qs:
            assert_exact(conn, query, 100)
        assert_consistent(conn)
    conn.execute(f"drop index {INDEX}")
    conn.execute(f"create index concurrently {INDEX} on df_items using dense_flat ({COLUMNS})")
    assert conn.execute(
        "select indisvalid from pg_index where indexrelid = %s::regclass", [INDEX]
    ).fetchone()[0]
    for query in qs:
        for k in [10, 1000]:
            assert_exact(conn, query, k)
    conn.execute(
        f"create index df_items_t3_idx on df_items using dense_flat ({COLUMNS}) where tenant = 3"
    )
    copy_rows(conn, random_vectors(rng, 100, 64), start=4000)
    for query in qs:
        for k in [10, 1000]:
            found = assert_exact(conn, query, k, f"tenant = 3 and {ALL}", "df_items_t3_idx")
            assert {i % 10 for i, _ in found} == {3}


def test_temporary_and_unlogged_tables(db):
    """A dense_flat index on a temporary and on an unlogged table is exact."""
    rng = np.random.default_rng(17)
    vectors = random_vectors(rng, 500, 24)
    try:
        for kind in ("temporary", "unlogged"):
            db.execute(f"create {kind} table df_{kind} (id int, tenant int, meta jsonb, v vector)")
            copy_rows(db, vectors[:250], table=f"df_{kind}")
            db.execute(f"create index df_{kind}_idx on df_{kind} using dense_flat ({COLUMNS})")
            copy_rows(db, vectors[250:], start=250, table=f"df_{kind}")
            prefer_index_scans(db)
            rows = dict(enumerate(vectors))
            for query in queries(rng, rows, 24, 3):
                for k in [1, 10, 500]:
                    assert_exact(db, query, k, index=f"df_{kind}_idx", table=f"df_{kind}")
    finally:
        db.execute("reset all")
        db.execute("drop table if exists df_temporary, df_unlogged")


def test_rows_without_a_vector_come_last(items):
    """Rows whose vector is NULL are indexed without codes and come after every other
    row, the zero vector (NaN) included, as in a sequential scan: an index scan without
    LIMIT returns every row once; a row given a vector later is found at its distance,
    one whose vector is set to NULL among the last."""
    conn, rows, rng = items
    query = queries(rng, rows, 64, 1)[0]
    nulls = {i for i, v in rows.items() if v is None}
    assert len(nulls) > 5
    found = assert_exact(conn, query, 5000)
    assert len(found) == len(rows)
    assert {i for i, _ in found[-len(nulls) :]} == nulls
    assert all(d is None for _, d in found[-len(nulls) :])
    assert math.isnan(found[-len(nulls) - 1][1])
    given = min(nulls)
    conn.execute("update df_items set v = %s where id = %s", [literal(query), given])
    conn.execute("update df_items set v = null where id = 1")
    found = assert_exact(conn, query, 5000)
    assert found[0][0] == given
    assert 1 in {i for i, d in found if d is None}
    assert_consistent(conn)


def test_integer_vectors_with_near_ties_are_exact(db):
    """Integer rows whose largest component is 127 (or a multiple by 3, 5, 7 of one) are
    quantized without error, so the bound has only its slack for rounding; multiples
    have the same cosine distance in exact arithmetic, and many rows differ by an ulp
    or two in pgvector's. The index's order must be pgvector's, to the last bit."""
    rng = np.random.default_rng(31)
    base = rng.integers(-6, 7, (400, 24)).astype(np.float32)
    base[:, 0] = np.where(rng.random(400) < 0.5, 127, -127)
    vectors = []
    for row in base:
        for scale in (1, 3, 5, 7, 2):
            vectors.append(row * np.float32(scale))
    create_items(db, vectors)
    try:
        for query in [np.ones(24, np.float32), base[3], base[4] + base[5], *base[6:9] * 3]:
            for k in [1, 5, 37, 500, 2000]:
                assert_exact(db, query, k)
    finally:
        db.execute("drop table df_items")


def test_extreme_magnitudes_are_exact(db):
    """Rows from 1e-20 to 1e20 in size: pgvector's float32 sums underflow (a norm of
    subnormal or zero squares: an inexact distance, or NaN) and overflow (an infinite
    norm: distance 1 or NaN, whatever the direction). The index's order is still the
    distances pgvector computes."""
    rng = np.random.default_rng(37)
    dim = 48
    vectors = []
    for i in range(1500):
        v = rng.standard_normal(dim)
        if i % 3:
            v = v * 10.0 ** float(
                rng.choice([-30, -22, -20, -19, -18, -15, -5, 5, 15, 18, 19, 20, 37])
            )
        vectors.append(v.astype(np.float32))
    create_items(db, vectors)
    try:
        distances = [
            d for _, d in db.execute("select id, v <=> %s from df_items", [literal(vectors[0])])
        ]
        # norms of 1e-30: squares underflow to 0, distance 0 or 2 by the dot's sign alone
        assert sum(d in (0.0, 2.0) for d in distances) > 10
        assert sum(d == 1.0 for d in distances) > 10  # overflowed norms: 1, whatever the angle
        # rows 0, 3, 6, ... are unscaled; a query of 1e18 makes the dot of rows of 1e37
        # infinite too (NaN)
        for query in [vectors[3], vectors[6] * 1e-18, -vectors[9], vectors[12] * 1e18]:
            for k in [1, 10, 100, 1000, 1500]:
                assert_exact(db, np.asarray(query, np.float32), k)
    finally:
        db.execute("drop table df_items")


def test_a_query_coded_coarsely_is_exact(db):
    """Rows of integers whose largest component is 127: their int8 codes are exact,
    so the only gap between a row's bound and its distance is the query's own int16
    coding, which rounds components up to 2,000 by up to half a step. The rows'
    distances lie closer together than that rounding moves them. The results are the
    brute force's, with the AVX-512 sums and without."""
    rng = np.random.default_rng(41)
    dim = 64
    rows = rng.integers(-126, 127, (3000, dim)).astype(np.float32)
    rows[:, 0] = 127
    create_items(db, list(rows))
    try:
        for _ in range(3):
            query = rng.uniform(-2000, 2000, dim).astype(np.float32)
            query[0] = 16383.0  # a step of 1: every other component rounds by up to 0.5
            for simd in ("on", "off"):
                db.execute(f"set hybrid_search.sparse_simd = {simd}")
                for k in [1, 10, 100, 1000]:
                    assert_exact(db, query, k)
    finally:
        db.execute("reset hybrid_search.sparse_simd")
        db.execute("drop table df_items")


def test_exact_under_writes_and_vacuum(items):
    """Inserts (duplicates and NULLs among them), updates (to and from NULL, to
    another vector), deletes: each found by the next query; exact before and after
    VACUUM, and again after more writes into the space VACUUM freed."""
    conn, rows, rng = items
    dim = 64
    new = random_vectors(rng, 300, dim)
    new[5] = rows[10]  # a duplicate of an indexed row
    for j, v in enumerate(new):
        conn.execute(
            "insert into df_items values (%s, %s, %s, %s)",
            [2000 + j, j % 10, json.dumps({"tenant": j % 10}), literal(v)],
        )
        rows[2000 + j] = v
    for i in rng.choice(2300, 200, replace=False).tolist():
        v = None if i % 11 == 0 else random_vectors(rng, 1, dim)[0]
        conn.execute("update df_items set v = %s where id = %s", [literal(v), i])
        rows[i] = v
    for i in [i for i, v in rows.items() if v is None][:5]:  # from NULL
        conn.execute("update df_items set v = %s where id = %s", [literal(rows[0]), i])
    for i in rng.choice(2300, 200, replace=False).tolist():
        conn.execute("delete from df_items where id = %s", [i])
    # the very next query sees a row just written
    fresh = rng.standard_normal(dim).astype(np.float32)
    conn.execute("insert into df_items values (9999, 0, '{}', %s)", [literal(fresh)])
    assert by_index(conn, fresh, 1)[0][0] == 9999
    qs = [*queries(rng, rows, dim, 4), fresh]
    for query in qs:
        for k in KS:
            assert_exact(conn, query, k)
    assert_consistent(conn)
    conn.execute("vacuum df_items")
    assert_consistent(conn)
    for query in qs:
        for k in KS:
            assert_exact(conn, query, k)
    copy_rows(conn, random_vectors(rng, 300, dim), start=10000)
    conn.execute("delete from df_items where id % 5 = 0 and id < 1000")
    conn.execute("vacuum df_items")
    for query in qs:
        for k in [10, 1000]:
            assert_exact(conn, query, k)
    assert_consistent(conn)


def test_deleted_rows_are_not_returned_after_vacuum(items):
    """Every row deleted and vacuumed away: the index returns nothing, and new rows
    only after that."""
    conn, _, rng = items
    conn.execute("delete from df_items")
    conn.execute("vacuum df_items")
    query = rng.standard_normal(64).astype(np.float32)
    assert by_index(conn, query, 10) == []
    copy_rows(conn, random_vectors(rng, 20, 64), start=5000)
    found = assert_exact(conn, query, 50)
    assert {i for i, _ in found} <= set(range(5000, 5020))
    assert_consistent(conn)


def test_a_cursor_fetches_in_order_past_k(items):
    """A scan without LIMIT, read through a cursor in pieces: the whole table in
    distance order, as a sequential scan sorts it."""
    conn, rows, rng = items
    query = queries(rng, rows, 64, 1)[0]
    sql = f"select id, v <=> %s::vector from df_items where {ALL} order by v <=> %s::vector"
    assert f"Index Scan using {INDEX} " in plan_of(conn, sql, [literal(query)] * 2)
    with conn.transaction():
        conn.execute("declare c cursor for " + sql, [literal(query)] * 2)
        found = []
        for n in (1, 9, 90, 900, 10000):
            found += conn.execute(f"fetch {n} from c").fetchall()
    distances = brute_force(conn, query, 1)[0]
    assert_same_top_k(found, distances, len(distances))


@pytest.mark.parametrize("where", [ALL, """meta @> '{"tenant": 3}'"""])
def test_concurrent_writer(items, dsn, where):
    """A writer inserts, deletes every 13th row and vacuums while a reader compares
    the index with the brute force in one snapshot; with a filter, its rows read from
    the posting lists of a GIN index without a pending list while the writer changes
    them."""
    conn, rows, rng = items
    if where != ALL:
        conn.execute("create index df_items_meta_idx on df_items using gin (meta)"
                     " with (fastupdate = off)")  # fmt: skip

    def write_rows(w, local, i):
        copy_rows(w, random_vectors(local, 20, 64), start=i)
        return i + 20

    def read(r):
        n = 0
        prefer_index_scans(r)
        for query in queries(rng, rows, 64, 2):
            with r.transaction():
                r.execute("set transaction isolation level repeatable read")
                for k in [10, 1000]:
                    found = by_index(r, query, k, where)
                    distances = brute_force(r, query, k, where)[0]
                    assert_same_top_k(found, distances, k)
                    n += 1
        return n

    read_while_writing(dsn, "df_items", write_rows, read, seconds=15)
    assert_consistent(conn)


def rows_rechecked_away(conn, query, k, where, table="df_items"):
    """Rows the index scan returned that its condition's recheck dropped."""
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "explain (analyze, costs off, timing off, summary off)"
            f" select id from {table} where {where} order by v <=> %s::vector limit %s",
            [literal(query), k],
        )
    )
    assert INDEX in plan, plan
    removed = re.search(r"Rows Removed by Index Recheck: (\d+)", plan)
    return int(removed.group(1)) if removed else 0


TENANT = "((meta->>'tenant')::int)"


def test_a_jsonb_filter_found_by_a_gin_index(items):
    """meta @> x on a jsonb_filter_ops column, with a GIN index to find its rows:
    the scan's condition; k rows whenever k match, exact, through writes; a filter
    nobody meets returns nothing; without the GIN index the same rows."""
    conn, rows, rng = items
    conn.execute(f"drop index {INDEX}")
    conn.execute(
        f"create index {INDEX} on df_items using dense_flat"
        " (v vector_cosine_ops, meta jsonb_filter_ops)"
    )
    conn.execute("create index df_items_meta_idx on df_items using gin (meta)")
    conn.execute("analyze df_items")
    tenant3 = """meta @> '{"tenant": 3}'"""
    query = queries(rng, rows, 64, 1)[0]
    plan = plan_of(
        conn,
        f"select id from df_items where {tenant3} order by v <=> %s::vector limit 10",
        [literal(query)],
    )
    assert "Index Cond: (meta @> " in plan, plan
    matching = conn.execute(f"select count(*) from df_items where {tenant3}").fetchone()[0]
    assert 150 < matching < 250
    # only the GIN index's rows are ranked: none is dropped by the recheck
    assert rows_rechecked_away(conn, query, 1000, tenant3) == 0
    for query in queries(rng, rows, 64, 4):
        for k in [1, 10, 100, matching, 1000]:
            found = assert_exact(conn, query, k, tenant3)
            assert len(found) == min(k, matching)
        assert_exact(conn, query, 50, """meta @> '{"tenant": 3, "odd": true}'""")
        assert by_index(conn, query, 10, """meta @> '{"tenant": 11}'""") == []
    # rows moved in and out of the filter, new ones, deleted ones
    conn.execute("""update df_items set meta = '{"tenant": 3}' where id % 10 = 4 and id < 800""")
    conn.execute("""update df_items set meta = '{"tenant": 5}' where id % 10 = 3 and id < 400""")
    copy_rows(conn, random_vectors(rng, 200, 64), start=3000)
    conn.execute(f"delete from df_items where {tenant3} and id % 7 = 0")
    for query in queries(rng, rows, 64, 3):
        for k in [10, 300, 1000]:
            assert_exact(conn, query, k, tenant3)
    conn.execute("vacuum df_items")
    conn.execute("drop index df_items_meta_idx")
    # nothing finds the rows now: all are ranked and the executor filters
    for query in queries(rng, rows, 64, 2):
        for k in [10, 1000]:
            assert_exact(conn, query, k, tenant3)
    assert_consistent(conn)


@pytest.mark.parametrize("opclass", ["jsonb_path_ops", "jsonb_ops"])
def test_a_gin_filters_rows_come_from_its_posting_lists(db, opclass):
    """With GIN's pending list empty, the filter's rows are read from the posting lists
    of the condition's entries, intersected (sparse_gin.c): a posting tree (2,000 rows),
    a list inside its entry (20 rows), two entries, a value no row has; with rows in the
    pending list, from GIN's bitmap scan. Every answer is the brute force's, and no row
    outside the condition is ranked, but for a list left out as 256 times longer than
    the set so far."""
    rng = np.random.default_rng(11)
    rows = create_items(db, random_vectors(rng, 20000, 16), dim=16)
    db.execute("""update df_items set meta = meta || '{"rare": true}' where id % 1000 = 7""")
    db.execute("vacuum df_items")
    db.execute(f"create index df_items_meta_idx on df_items using gin (meta {opclass})")
    db.execute("analyze df_items")
    conditions = [
        """meta @> '{"tenant": 3}'""",
        """meta @> '{"rare": true}'""",
        """meta @> '{"tenant": 3, "odd": true}'""",
        """meta @> '{"tenant": 4, "odd": true}'""",
        """meta @> '{"tenant": 3}' and meta @> '{"rare": true}'""",
        """meta @> '{"tenant": 11}'""",
        """meta @> '{"odd": false, "rare": true}'""",
    ]

    def assert_conditions_exact(sizes, narrowed=conditions[:-1]):
        for where, size in zip(conditions, sizes, strict=True):
            matching = db.execute(f"select count(*) from df_items where {where}").fetchone()[0]
            assert matching == size, where
            if where in narrowed:
                assert rows_rechecked_away(db, queries(rng, rows, 16, 1)[0], 1000, where) == 0
            for query in queries(rng, rows, 16, 2):
                for k in [10, 1000, 2500]:
                    assert len(assert_exact(db, query, k, where)) == min(k, matching)

    assert_conditions_exact([2000, 20, 2000, 0, 0, 0, 0])
    # read from the shortest list (jsonb orders the keys "odd" first), the 10,000 even
    # rows' is over 256 times the 20 rare rows': it is left out, and the executor
    # rechecks the 20 rows away
    assert rows_rechecked_away(db, queries(rng, rows, 16, 1)[0], 1000, conditions[-1]) == 20
    # under 64 kB (8,192 keys) a list longer is left out of the intersection (the
    # 10,000 odd rows' and jsonb_ops' 20,000 with the key "tenant"): the others still
    # hold every row, and the value 3's alone only tenant 3's
    db.execute("set work_mem = '64kB'")
    assert_conditions_exact([2000, 20, 2000, 0, 0, 0, 0], narrowed=conditions[:2])
    db.execute("reset work_mem")
    # rows GIN keeps in its pending list: new ones, and ones moved into tenant 3
    copy_rows(db, random_vectors(rng, 300, 16), start=20000)
    db.execute("""update df_items set meta = '{"tenant": 3, "rare": true}' where id < 30""")
    moved = [2057, 49, 2027, 0, 30, 0, 0]
    assert_conditions_exact(moved)
    # merged into the posting lists
    assert db.execute("select gin_clean_pending_list('df_items_meta_idx')").fetchone()[0] > 0
    assert_conditions_exact(moved)


def test_a_posting_tree_whose_first_leaves_vacuum_emptied(db):
    """VACUUM empties the leaves of the rows it removes but never deletes a posting
    tree's leftmost leaf: the filter set read from the tree (sparse_gin.c) finds no
    items there and goes on to the next leaf. It crashed the backend (session 40:
    pfree of the NULL PostgreSQL returns for an empty leaf), and with it the server."""
    rng = np.random.default_rng(12)
    rows = create_items(db, random_vectors(rng, 60000, 2), dim=2)
    db.execute("create index df_items_meta_idx on df_items using gin (meta jsonb_path_ops)"
               " with (fastupdate = off)")  # fmt: skip
    db.execute("delete from df_items where id < 45000")
    db.execute("vacuum df_items")
    where = """meta @> '{"odd": true}'"""
    assert rows_rechecked_away(db, queries(rng, rows, 2, 1)[0], 1000, where) == 0
    for query in queries(rng, rows, 2, 3):
        for k in [10, 1000]:
            assert len(assert_exact(db, query, k, where)) == k


def test_a_filters_rows_are_reused_only_under_the_same_snapshot(items, dsn):
    """A transaction keeps the rows a filter's GIN scan found for the next scan under
    an equal snapshot (sparse_filter.c): another filter value is looked up anew; a row
    the transaction inserted, or another session committed, since is found."""
    conn, rows, rng = items
    conn.execute("create index df_items_meta_idx on df_items using gin (meta)")
    conn.execute("analyze df_items")
    query = queries(rng, rows, 64, 1)[0]

    def top(tenant):
        return [r[0] for r in by_index(conn, query, 5, f"""meta @> '{{"tenant": {tenant}}}'""")]

    def add_row(c, row_id):
        c.execute(
            """insert into df_items values (%s, 3, '{"tenant": 3}', %s::vector)""",
            [row_id, literal(query)],
        )

    with conn.transaction():
        conn.execute("set transaction isolation level repeatable read")
        first = top(3)
        assert len(first) == 5 and all(i % 10 == 3 for i in first), first
        # the same snapshot and command, another value
        fives = top(5)
        assert len(fives) == 5 and all(i % 10 == 5 for i in fives), fives
        assert top(3) == first
        # the same snapshot but for its command id
        add_row(conn, 9001)
        assert top(3)[0] == 9001
        raise psycopg.Rollback()
    # a later snapshot of the same transaction, after another session's commit
    with conn.transaction():
        assert top(3) == first
        with psycopg.connect(dsn, autocommit=True) as other:
            add_row(other, 9002)
        assert top(3)[0] == 9002
    conn.execute("delete from df_items where id = 9002")


def test_an_int4_filter_on_an_expression_found_by_a_btree(items):
    """(meta->>'tenant')::int = x on an int4_filter_ops expression column, with a btree
    on the same expression: exact for every k, NULL and absent values match nothing,
    and a generic plan's NULL parameter returns nothing."""
    conn, rows, rng = items
    conn.execute(f"drop index {INDEX}")
    conn.execute(
        f"create index {INDEX} on df_items using dense_flat"
        f" (v vector_cosine_ops, {TENANT} int4_filter_ops)"
    )
    conn.execute(f"create index df_items_tenant_idx on df_items ({TENANT})")
    conn.execute("update df_items set meta = '{}' where id % 100 = 3")  # no tenant
    conn.execute("analyze df_items")
    where = f"{TENANT} = 3"
    query = queries(rng, rows, 64, 1)[0]
    plan = plan_of(
        conn,
        f"select id from df_items where {where} order by v <=> %s::vector limit 10",
        [literal(query)],
    )
    assert "Index Cond: (((meta ->> 'tenant'::text))::integer = 3)" in plan, plan
    matching = conn.execute(f"select count(*) from df_items where {where}").fetchone()[0]
    for query in queries(rng, rows, 64, 4):
        for k in [1, 10, 100, matching, 1000]:
            found = assert_exact(conn, query, k, where)
            assert len(found) == min(k, matching)
    assert rows_rechecked_away(conn, query, 1000, where) == 0
    conn.execute("set plan_cache_mode = force_generic_plan")
    try:
        conn.execute(
            f"prepare df_tenant (int, vector) as select id from df_items where {TENANT} = $1"
            " order by v <=> $2 limit 10"
        )
        vector = f"'{literal(query)}'"
        plan = "\n".join(
            r[0] for r in conn.execute(f"explain (costs off) execute df_tenant (3, {vector})")
        )
        assert INDEX in plan, plan
        assert conn.execute(f"execute df_tenant (null, {vector})").fetchall() == []
        assert [r[0] for r in conn.execute(f"execute df_tenant (3, {vector})")] == [
            i for i, _ in assert_exact(conn, query, 10, where)
        ]
    finally:
        conn.execute("deallocate df_tenant")
        conn.execute("reset plan_cache_mode")
    conn.execute("drop index df_items_tenant_idx")
    # nothing finds the rows now: all are ranked and the executor filters
    assert rows_rechecked_away(conn, query, 1000, where) > 1000
    for query in queries(rng, rows, 64, 2):
        for k in [10, matching, 1000]:
            assert len(assert_exact(conn, query, k, where)) == min(k, matching)


def test_a_filter_is_exact_when_the_bitmap_is_lossy(db):
    """A bitmap of the filter's rows past work_mem keeps whole heap pages: their
    other rows are ranked too and the executor's recheck drops them; the top k is
    the brute force's all the same."""
    rng = np.random.default_rng(7)
    rows = create_items(db, random_vectors(rng, 20000, 8))
    db.execute("alter table df_items set (fillfactor = 10)")
    db.execute("vacuum full df_items")
    db.execute(f"drop index {INDEX}")
    db.execute(
        f"create index {INDEX} on df_items using dense_flat"
        " (v vector_cosine_ops, meta jsonb_filter_ops)"
    )
    db.execute("create index df_items_meta_idx on df_items using gin (meta)")
    # a row in GIN's pending list: the filter's rows come from a bitmap scan, not
    # from the posting lists (sparse_gin.c)
    copy_rows(db, [np.ones(8, np.float32)], start=20000)
    db.execute("analyze df_items")
    tenant3 = """meta @> '{"tenant": 3}'"""
    matching = db.execute(f"select count(*) from df_items where {tenant3}").fetchone()[0]
    assert matching == 2000
    try:
        db.execute("set work_mem = '64kB'")
        assert rows_rechecked_away(db, queries(rng, rows, 8, 1)[0], 1000, tenant3) > 0
        for work_mem in ["64kB", "4MB"]:
            db.execute(f"set work_mem = '{work_mem}'")
            for query in queries(rng, rows, 8, 3):
                for k in [10, 1000, 2500]:
                    found = assert_exact(db, query, k, tenant3)
                    assert len(found) == min(k, matching)
    finally:
        db.execute("reset work_mem")
        db.execute("drop table df_items")


@contextlib.contextmanager
def tenant3_reader(conn, policy):
    """The connection as df_reader, a role whose policy on df_items is policy."""
    conn.execute("alter table df_items enable row level security")
    conn.execute(f"create policy tenant3 on df_items using ({policy})")
    conn.execute("drop role if exists df_reader")
    conn.execute("create role df_reader")
    conn.execute("grant select on df_items to df_reader")
    try:
        conn.execute("set role df_reader")
        prefer_index_scans(conn)
        yield
    finally:
        conn.execute("reset role")
        conn.execute("drop policy tenant3 on df_items")
        conn.execute("alter table df_items disable row level security")
        conn.execute("revoke all on df_items from df_reader")
        conn.execute("drop role df_reader")


@pytest.mark.parametrize(
    ("policy", "condition"),
    [
        (f"{TENANT} = 3", "(((meta ->> 'tenant'::text))::integer = 3)"),
        ("""meta @> '{"tenant": 3}'""", """(meta @> '{"tenant": 3}'::jsonb)"""),
    ],
    ids=["int4 found by a btree", "jsonb found by no index"],
)
def test_row_level_security_returns_k_visible_rows(items, policy, condition):
    """A role whose policy keeps tenant 3's rows sees only those, k of them whenever
    k exist, exactly ordered; the policy is the scan's condition on a filter column,
    whose rows a btree finds, or no index (every row scored, the executor filters)."""
    conn, rows, rng = items
    conn.execute(f"drop index {INDEX}")
    conn.execute(
        f"create index {INDEX} on df_items using dense_flat"
        f" (v vector_cosine_ops, meta jsonb_filter_ops, {TENANT} int4_filter_ops)"
    )
    conn.execute(f"create index df_items_tenant_idx on df_items ({TENANT})")
    conn.execute("analyze df_items")
    tenant3 = {i for i, v in rows.items() if i % 10 == 3}
    with tenant3_reader(conn, policy):
        assert conn.execute("select count(*) from df_items").fetchone()[0] == len(tenant3)
        query = queries(rng, rows, 64, 1)[0]
        plan = plan_of(
            conn, "select id from df_items order by v <=> %s::vector limit 10", [literal(query)]
        )
        assert f"Index Scan using {INDEX} " in plan and f"Index Cond: {condition}" in plan, plan
        for query in queries(rng, rows, 64, 4):
            for k in [1, 10, 100, 1000]:
                found = assert_exact(conn, query, k, "true")
                assert {i for i, _ in found} <= tenant3
                assert len(found) == min(k, len(tenant3))


def test_the_planner_picks_dense_flat_for_a_filter_and_hnsw_without(db):
    """With an HNSW index and a dense_flat index with a jsonb filter column on the
    same vectors, and default settings: a filtered ORDER BY <=> LIMIT k uses
    dense_flat, an unfiltered one HNSW."""
    rng = np.random.default_rng(3)
    create_items(
        db, random_vectors(rng, 10000, 64), "v vector_cosine_ops, meta jsonb_filter_ops", dim=64
    )
    db.execute("reset enable_seqscan")
    db.execute("create index df_items_meta_idx on df_items using gin (meta)")
    db.execute("create index df_items_hnsw_idx on df_items using hnsw (v vector_cosine_ops)")
    db.execute("analyze df_items")
    query = literal(rng.standard_normal(64).astype(np.float32))
    try:
        filtered = plan_of(
            db,
            """select id from df_items where meta @> '{"tenant": 3}'"""
            " order by v <=> %s::vector limit 10",
            [query],
        )
        unfiltered = plan_of(
            db, "select id from df_items order by v <=> %s::vector limit 10", [query]
        )
        assert f"Index Scan using {INDEX} " in filtered, filtered
        assert "Index Scan using df_items_hnsw_idx " in unfiltered, unfiltered
        # nor dense_flat for an unfiltered one without HNSW, sequential scans off or not
        db.execute("drop index df_items_hnsw_idx")
        db.execute("set enable_seqscan = off")
        unfiltered = plan_of(
            db, "select id from df_items order by v <=> %s::vector limit 10", [query]
        )
        assert INDEX not in unfiltered, unfiltered
    finally:
        db.execute("drop table df_items")


def test_documents_has_a_dense_flat_index_with_a_metadata_filter(db):
    """The extension's index on documents (dense, metadata jsonb_filter_ops): a
    metadata filter's ORDER BY dense <=> q uses it, exactly; the GIN index that finds
    the filter's rows has no pending list."""
    name = db.execute(
        "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid"
        " join pg_am a on a.oid = c.relam"
        " where i.indrelid = 'documents'::regclass and a.amname = 'dense_flat'"
    ).fetchall()
    assert len(name) == 1, name
    index = name[0][0]
    columns = db.execute(
        "select array_agg(a.attname order by u.n), array_agg(o.opcname order by u.n)"
        " from pg_index i, unnest(i.indkey, i.indclass) with ordinality as u (att, opc, n),"
        " pg_attribute a, pg_opclass o where i.indexrelid = %s::regclass"
        " and a.attrelid = i.indrelid and a.attnum = u.att and o.oid = u.opc",
        [index],
    ).fetchone()
    assert columns == (["dense", "metadata"], ["vector_cosine_ops", "jsonb_filter_ops"]), columns
    # its filter's rows come from GIN's posting lists, never held back in a pending list
    gin_options = "select reloptions from pg_class where oid = 'documents_metadata_idx'::regclass"
    assert db.execute(gin_options).fetchone()[0] == ["fastupdate=off"]
    for tenant in range(3):
        insert(db, *[f"note {i} on vacuum and index {tenant}" for i in range(15)],
               metadata={"tenant": tenant})  # fmt: skip
    query = db.execute("select dense from documents order by id limit 1").fetchone()[0]
    prefer_index_scans(db)
    try:
        for k in [1, 5, 15, 40]:
            sql = (
                "select id, dense <=> %s from documents where metadata @> '{\"tenant\": 1}'"
                " order by dense <=> %s limit %s"
            )
            plan = plan_of(db, sql, [query, query, k])
            assert f"Index Scan using {index} " in plan, plan
            found = db.execute(sql, [query, query, k]).fetchall()
            db.execute("set enable_indexscan = off")
            distances = dict(
                db.execute(
                    "select id, dense <=> %s from documents where metadata @> '{\"tenant\": 1}'",
                    [query],
                ).fetchall()
            )
            db.execute("reset enable_indexscan")
            assert_same_top_k(found, distances, k)
            assert len(found) == min(k, 15)
        assert_consistent(db, index)
    finally:
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            db.execute(f"reset {setting}")


def test_hostile_inputs(items):
    """pgvector's own errors pass through an index scan; a query of another dimension,
    a row of another dimension than the index's, and vectors too large for a page
    raise errors, not crashes; a NULL query returns no wrong order."""
    conn, rows, rng = items
    for bad, message in [
        ("[1,NaN]", "NaN not allowed in vector"),
        ("[1,Infinity]", "infinite value not allowed in vector"),
        ("[]", "vector must have at least 1 dimension"),
        ("[" + ",".join(["1"] * 16001) + "]", "vector cannot have more than 16000 dimensions"),
    ]:
        with pytest.raises(psycopg.Error, match=message):
            conn.execute("select id from df_items order by v <=> %s::vector limit 1", [bad])
    with pytest.raises(psycopg.errors.DataException, match="different vector dimensions 64 and 63"):
        by_index(conn, np.ones(63, np.float32), 10)
    with pytest.raises(psycopg.errors.DataException, match="holds vectors of 64 dimensions, not 3"):
        conn.execute("insert into df_items (id, v) values (-1, '[1,2,3]')")
    # a NULL query: no crash, and no row is put before another by a distance
    found = conn.execute(
        f"select id, v <=> null::vector from df_items where {ALL}"
        " order by v <=> null::vector limit 10"
    ).fetchall()
    assert len(found) == 10 and all(d is None for _, d in found), found
    assert conn.execute("select 1").fetchone() == (1,)
    query = queries(rng, rows, 64, 1)[0]
    assert_exact(conn, query, 100)
    assert_consistent(conn)
    # filter and ranked columns in the wrong places
    with pytest.raises(psycopg.Error):
        conn.execute("create index on df_items using dense_flat (meta jsonb_filter_ops, v)")
    with pytest.raises(psycopg.Error):
        conn.execute("create index on df_items using dense_flat (v, v)")


@pytest.mark.parametrize("dim", [9000, 16000])
def test_vectors_too_large_for_a_page_are_refused(db, dim):
    """A vector whose quantized entry cannot fit a page: building the index over one
    and inserting one into an index fail with an error, the server stays up, and
    smaller vectors still work."""
    db.execute("drop table if exists df_big")
    db.execute("create table df_big (id int primary key, v vector)")
    big = "[" + ",".join(["0.5"] * dim) + "]"
    try:
        db.execute("insert into df_big values (1, %s)", [big])
        too_large = rf"takes vectors of 1 to \d+ dimensions, not {dim}"
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match=too_large):
            db.execute("create index df_big_idx on df_big using dense_flat (v vector_cosine_ops)")
        db.execute("truncate df_big")
        db.execute("create index df_big_idx on df_big using dense_flat (v vector_cosine_ops)")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match=too_large):
            db.execute("insert into df_big values (2, %s)", [big])
        assert db.execute("select 1").fetchone() == (1,)
        db.execute("insert into df_big values (3, '[1,2,3]'), (4, '[3,2,1]')")
        db.execute("set enable_seqscan = off")
        assert [
            r[0] for r in db.execute("select id from df_big order by v <=> '[1,2,2]' limit 2")
        ] == [3, 4]
    finally:
        db.execute("reset enable_seqscan")
        db.execute("drop table df_big")


def test_a_non_superuser_cannot_break_it(items):
    """A role that may only read df_items ranks exactly through the index and can
    neither write, drop nor rebuild it, nor run the check; in a table of its own it
    builds a dense_flat index, whose bad rows fail without harming it."""
    conn, rows, rng = items
    conn.execute("drop role if exists df_plain")
    conn.execute("create role df_plain")
    conn.execute("grant select on df_items to df_plain")
    conn.execute("grant create on schema public to df_plain")
    try:
        conn.execute("set role df_plain")
        for k in [10, 1000]:
            assert_exact(conn, queries(rng, rows, 64, 1)[0], k)
        for statement in (
            "insert into df_items (id, v) values (-1, '[1]')",
            f"drop index {INDEX}",
            f"reindex index {INDEX}",
        ):
            with pytest.raises(psycopg.Error), conn.transaction():
                conn.execute(statement)
        if has_check(conn):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select dense_flat_check(%s)", [INDEX])
        conn.execute("create table df_own (id int, v vector)")
        conn.execute("insert into df_own select i, array[i, 1, -i]::real[]::vector"
                     " from generate_series(1, 100) as i")  # fmt: skip
        conn.execute("create index df_own_idx on df_own using dense_flat (v vector_cosine_ops)")
        for bad in ("'[1,2]'", "'[1,2,3,4]'"):
            with pytest.raises(psycopg.Error):
                conn.execute(f"insert into df_own values (0, {bad})")
        found = conn.execute("select id from df_own order by v <=> '[1,0,-1]' limit 3").fetchall()
        assert [r[0] for r in found] == [100, 99, 98]
        conn.execute("reset role")
        assert_consistent(conn, "df_own_idx")
    finally:
        conn.execute("reset role")
        conn.execute("drop table if exists df_own")
        conn.execute("revoke create on schema public from df_plain")
        conn.execute("drop owned by df_plain")
        conn.execute("drop role df_plain")


@pytest.fixture(scope="module")
def df_crash_cluster(scratch):
    yield from own_cluster(scratch / "df-crash-cluster", 5441)


def reconnect(dsn, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(dsn)
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_kill_9_during_copy_leaves_an_exact_index(df_crash_cluster, layout, model_dir):
    """A backend killed (-9) during a COPY into an indexed table: after crash recovery
    the committed rows are the table's, the index is exact and consistent, takes
    new rows, and VACUUM clears the killed COPY's entries."""
    dsn = create_database(df_crash_cluster, layout, model_dir, "df_crash")
    rng = np.random.default_rng(9)
    dim = 96
    with connect(dsn) as conn:
        conn.execute("create table df_items (id int primary key, tenant int, meta jsonb, v vector)")
        conn.execute(f"create index {INDEX} on df_items using dense_flat ({COLUMNS})")
        rows = dict(enumerate(random_vectors(rng, 2000, dim)))
        copy_rows(conn, rows.values())
        committed = {i for (i,) in conn.execute("select id from df_items")}

    def copy_forever(c):
        with c.cursor().copy("copy df_items (id, tenant, meta, v) from stdin") as copy:
            local = np.random.default_rng(1)
            for i in range(10000, 10_000_000):
                copy.write_row((i, 0, "{}", literal(local.standard_normal(dim))))

    # well into the COPY: index pages filled and added
    kill_midway(dsn, "copy df_items", copy_forever)
    with reconnect(dsn) as conn:
        assert {i for (i,) in conn.execute("select id from df_items")} == committed
        assert conn.execute("select pg_relation_size(%s) > 8192 * 4", [INDEX]).fetchone()[0]
        assert_consistent(conn)
        conn.execute("set enable_seqscan = off")
        for query in queries(rng, rows, dim, 3):
            for k in [10, 1000]:
                assert_exact(conn, query, k)
        copy_rows(conn, random_vectors(rng, 100, dim), start=5000)
        conn.execute("vacuum df_items")
        assert_consistent(conn)
        for query in queries(rng, rows, dim, 2):
            assert_exact(conn, query, 2100)


def test_an_index_built_before_a_crash_is_recovered(df_crash_cluster, layout, model_dir):
    """An index built, then rows inserted, and the server stopped in immediate mode
    (no checkpoint): WAL replay alone brings back an exact, consistent index."""
    dsn = create_database(df_crash_cluster, layout, model_dir, "df_crash_build")
    rng = np.random.default_rng(10)
    with connect(dsn) as conn:
        conn.execute("checkpoint")
        conn.execute("create table df_items (id int primary key, tenant int, meta jsonb, v vector)")
        rows = dict(enumerate(random_vectors(rng, 2000, 40)))
        copy_rows(conn, rows.values())
        conn.execute(f"create index {INDEX} on df_items using dense_flat ({COLUMNS})")
        copy_rows(conn, random_vectors(rng, 300, 40), start=2000)
        # an unlogged table: emptied by the crash, its index reset from its init fork
        conn.execute("create unlogged table df_unlogged (id int, tenant int, meta jsonb, v vector)")
        conn.execute(f"create index df_unlogged_idx on df_unlogged using dense_flat ({COLUMNS})")
        copy_rows(conn, random_vectors(rng, 100, 40), table="df_unlogged")
        conn.execute("delete from df_items where id % 9 = 0")
        conn.execute("vacuum df_items")
    df_crash_cluster.stop(mode="immediate")
    df_crash_cluster.start()
    with reconnect(dsn) as conn:
        assert conn.execute("select count(*) from df_items").fetchone()[0] == 2300 - 256
        assert_consistent(conn)
        conn.execute("set enable_seqscan = off")
        for query in queries(rng, rows, 40, 3):
            for k in [1, 10, 1000, 2300]:
                assert_exact(conn, query, k)
        assert conn.execute("select count(*) from df_unlogged").fetchone()[0] == 0
        prefer_index_scans(conn)
        query = queries(rng, rows, 40, 1)[0]
        assert by_index(conn, query, 10, index="df_unlogged_idx", table="df_unlogged") == []
        copy_rows(conn, random_vectors(rng, 100, 12), table="df_unlogged")  # other dimensions
        assert_exact(
            conn, np.ones(12, np.float32), 50, index="df_unlogged_idx", table="df_unlogged"
        )


@pytest.fixture(scope="module")
def primary_and_standby(scratch):
    yield from own_primary_and_standby(scratch / "df-replication", 5442)


def wait_for_replay(primary, standby, timeout=60):
    lsn = primary.execute("select pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standby.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()[0]:
            return
        time.sleep(0.2)
    raise AssertionError("the standby did not catch up")


def test_a_hot_standby_returns_the_primarys_results(primary_and_standby, layout, model_dir):
    """An index built on the primary while a standby streams (the build's pages reach
    it through WAL), then inserts, updates, deletes and VACUUM: the standby's index
    scans, filtered and not, return the primary's rows, and the brute force's."""
    primary_cluster, standby_cluster = primary_and_standby
    dsn = create_database(primary_cluster, layout, model_dir, "df_standby")
    rng = np.random.default_rng(12)
    dim = 48
    with connect(dsn) as primary:
        primary.execute(
            "create table df_items (id int primary key, tenant int, meta jsonb, v vector)"
        )
        rows = dict(enumerate(random_vectors(rng, 2000, dim)))
        copy_rows(primary, rows.values())
        primary.execute(
            f"create index {INDEX} on df_items using dense_flat"
            " (v vector_cosine_ops, meta jsonb_filter_ops)"
        )
        primary.execute("create index df_items_meta_idx on df_items using gin (meta)")
        copy_rows(primary, random_vectors(rng, 300, dim), start=2000)
        primary.execute("update df_items set v = null where id % 17 = 0")
        primary.execute("delete from df_items where id % 13 = 0")
        primary.execute("vacuum analyze df_items")
        copy_rows(primary, random_vectors(rng, 50, dim), start=3000)
        with connect(standby_cluster.dsn("df_standby")) as standby:
            assert standby.execute("select pg_is_in_recovery()").fetchone()[0]
            wait_for_replay(primary, standby)
            for conn in (primary, standby):
                prefer_index_scans(conn)
            for query in queries(rng, rows, dim, 3):
                for k, where in [
                    (10, ALL),
                    (1000, ALL),
                    (100, """meta @> '{"tenant": 3}'"""),
                ]:
                    on_primary = assert_exact(primary, query, k, where)
                    on_standby = assert_exact(standby, query, k, where)
                    assert [d for _, d in on_standby] == [d for _, d in on_primary]
            assert_consistent(standby)


def test_dump_and_restore_keep_the_index_exact(cluster, conn, layout, model_dir, scratch):
    """pg_dump -Fc and pg_restore of a database with a dense_flat index on a table of
    its own and the extension's on documents: right after the restore, with no other
    step, the same queries use the indexes and return the same rows."""
    source = create_database(cluster, layout, model_dir, "df_dump_src")
    rng = np.random.default_rng(13)
    dim = 32
    tenant3 = """meta @> '{"tenant": 3}'"""
    try:
        with connect(source) as src:
            rows = create_items(
                src, random_vectors(rng, 1500, dim), "v vector_cosine_ops, meta jsonb_filter_ops"
            )
            src.execute("create index df_items_meta_idx on df_items using gin (meta)")
            insert(src, *[f"index {i} about vacuum" for i in range(20)], metadata={"tenant": 3})
            insert(src, *[f"wal {i} and replicas" for i in range(20)], metadata={"tenant": 4})
            qs = queries(rng, rows, dim, 3)
            before = [
                [by_index(src, q, k, where) for q in qs for k in (10, 1000)]
                for where in (ALL, tenant3)
            ]
            doc_query = src.execute("select dense from documents order by id limit 1")
            doc_query = doc_query.fetchone()[0]
            doc_sql = (
                "select id, dense <=> %s from documents where metadata @> '{\"tenant\": 3}'"
                " order by dense <=> %s limit 10"
            )
            docs_before = src.execute(doc_sql, [doc_query, doc_query]).fetchall()
        dump = scratch / "df.dump"
        subprocess.run([pg_bin() / "pg_dump", "-Fc", "-f", dump, "-d", source], check=True)
        database.recreate_database(cluster.dsn("postgres"), "df_dump_dst")
        target = cluster.dsn("df_dump_dst")
        subprocess.run(
            [pg_bin() / "pg_restore", "--exit-on-error", "-d", target, dump],
            check=True,
            capture_output=True,
        )
        with connect(target) as dst:
            prefer_index_scans(dst)
            after = [
                [by_index(dst, q, k, where) for q in qs for k in (10, 1000)]
                for where in (ALL, tenant3)
            ]
            assert after == before
            for q in qs:
                assert_exact(dst, q, 100, tenant3)
            assert_consistent(dst)
            plan = plan_of(dst, doc_sql, [doc_query, doc_query])
            assert "Index Scan using documents_dense" in plan, plan
            docs_after = dst.execute(doc_sql, [doc_query, doc_query]).fetchall()
            assert [d for _, d in docs_after] == [d for _, d in docs_before] and docs_before
    finally:
        conn.execute("drop database if exists df_dump_src with (force)")
        conn.execute("drop database if exists df_dump_dst with (force)")
