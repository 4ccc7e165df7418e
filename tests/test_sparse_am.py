"""The sparse_inverted index access method (extension/sparse_*.c): ORDER BY v <#> q
through the index equals a brute force over the same vectors (numpy) and the
sequential scan, for k up to 1,000, under inserts, updates, deletes, VACUUM,
concurrent writers, a WHERE filter and row-level security; a kill -9 during a
COPY leaves an index that sparse_inverted_check() calls consistent; sparse_search
uses it; hybrid_search_check() reports it and finds damage."""

import contextlib
import json
import re
import struct
import time

import numpy as np
import psycopg
import pytest
from helpers import (
    SCAN_SETTINGS,
    assert_setting_agrees,
    connect,
    create_database,
    insert,
    kill_midway,
    nested_plans,
    notices,
    own_cluster,
    read_while_writing,
    toast_blocks_read,
)

DIM = 5000
KS = [1, 10, 100, 1000]


def random_vectors(rng, n, min_nnz=1, max_nnz=60):
    """Zipf-drawn token ids and weights in (0, 2], a few empty vectors and NULLs."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.01:
            out.append(None)
            continue
        if r < 0.02:
            out.append({})
            continue
        nnz = int(rng.integers(min_nnz, max_nnz + 1))
        tokens = np.unique(np.minimum(rng.zipf(1.2, nnz), DIM) - 1)
        # weights rounded to 1/8: ties between documents are frequent
        weights = np.ceil(rng.random(tokens.size) * 16) / 8
        out.append(dict(zip(tokens.tolist(), weights.tolist(), strict=True)))
    return out


def literal(vec):
    if vec is None:
        return None
    body = ",".join(f"{t + 1}:{w!r}" for t, w in sorted(vec.items()))
    return f"{{{body}}}/{DIM}"


def brute_force(rows, query):
    """id -> score (float64 sum of float32 products) for every non-null row."""
    return {
        i: float(sum(np.float32(w) * np.float64(query.get(t, 0.0)) for t, w in v.items()))
        for i, v in rows.items()
        if v is not None
    }


def by_index(conn, query, k, where="true", index="am_items_v_idx"):
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            f"explain (costs off) select id from am_items where {where}"
            " order by v <#> %s::sparsevec limit %s",
            [literal(query), k],
        )
    )
    assert f"Index Scan using {index} " in plan, plan
    return conn.execute(
        f"select id, v <#> %s::sparsevec from am_items where {where}"
        " order by v <#> %s::sparsevec limit %s",
        [literal(query), literal(query), k],
    ).fetchall()


def by_seqscan(conn, query, k, where="true"):
    conn.execute("set enable_indexscan = off")
    try:
        return conn.execute(
            f"select id, v <#> %s::sparsevec from am_items where {where}"
            " order by v <#> %s::sparsevec limit %s",
            [literal(query), literal(query), k],
        ).fetchall()
    finally:
        conn.execute("reset enable_indexscan")


def assert_exact(conn, rows, query, k, where="true", visible=None, index="am_items_v_idx"):
    """The index's rows are a correct top k: the seq scan's distances exactly, in
    order, each the brute-force score, and nothing left out scores higher."""
    found = by_index(conn, query, k, where, index)
    expected = by_seqscan(conn, query, k, where)
    assert [d for _, d in found] == [d for _, d in expected]
    ids = [i for i, _ in found]
    assert len(set(ids)) == len(ids)
    candidates = rows if visible is None else {i: rows[i] for i in visible}
    scores = brute_force(candidates, query)
    nonnull = [i for i in ids if rows[i] is not None]
    for i, d in found:
        if rows[i] is None:
            assert d is None
        else:
            assert -d == pytest.approx(scores[i], rel=1e-5, abs=1e-6)
    assert len(found) == min(k, len(candidates))
    if nonnull and len(nonnull) == len(ids):
        kth = min(scores[i] for i in nonnull)
        better_missing = [
            i for i, s in scores.items() if i not in set(ids) and s > kth + 1e-5 * abs(kth) + 1e-6
        ]
        assert not better_missing
    return found


def create_items(db, vectors):
    """am_items: the vectors (tenant id % 10) under a sparse_inverted index, with
    sequential scans off; its rows by id."""
    db.execute("drop table if exists am_items")
    # no autovacuum: a VACUUM merges the pending list the tests count
    db.execute(
        "create table am_items (id int primary key, tenant int, v sparsevec)"
        " with (autovacuum_enabled = false)"
    )
    with db.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
        for i, v in enumerate(vectors):
            copy.write_row((i, i % 10, literal(v)))
    db.execute("create index am_items_v_idx on am_items using sparse_inverted (v)")
    db.execute("analyze am_items")
    db.execute("set enable_seqscan = off")
    return dict(enumerate(vectors))


def drop_items(db):
    """am_items dropped, and every setting a test changed put back."""
    db.execute("reset all")
    db.execute("drop table am_items")


@pytest.fixture
def items(db):
    """A table of random sparse vectors with a sparse_inverted index, and its rows."""
    rng = np.random.default_rng(14)
    rows = create_items(db, random_vectors(rng, 3000))
    yield db, rows, rng
    db.execute("reset role")
    db.execute("reset enable_seqscan")
    db.execute("reset enable_bitmapscan")
    db.execute("reset enable_sort")
    db.execute("drop table if exists am_items")


def check(conn, index="am_items_v_idx"):
    report = conn.execute("select sparse_inverted_check(%s)", [index]).fetchone()[0]
    return json.loads(report) if isinstance(report, str) else report


def queries(rng, n=8):
    return [q for q in random_vectors(rng, n * 2, 1, 15) if q][:n]


def test_exact_for_every_k(items):
    conn, rows, rng = items
    for query in queries(rng):
        for k in KS:
            assert_exact(conn, rows, query, k)
    assert check(conn)["consistent"]


def test_a_first_batch_leaving_long_lists_out_is_exact(db):
    """With positive weights the first batch may leave out the long lists that
    cannot bring a row in alone and look them up, through their skip arrays, only
    at the rows that may enter it (a DEBUG1 line says so); a later batch (a filter
    discarding rows) adds them to every row. Rows and scores are the brute force's
    for every k, filtered and not, and again after a merge rewrote the lists."""
    rng = np.random.default_rng(15)
    rows = create_items(db, random_vectors(rng, 20000))
    # a small first batch: few rows may enter it, so the lookups pay
    db.execute("set hybrid_search.sparse_batch_size = 10")
    with notices(db) as lines:
        tenant3 = {i for i in rows if i % 10 == 3}
        try:
            # 'auto' (the default) leaves lists out only in indexes of 2^19 row positions and more
            db.execute("set client_min_messages = debug1")
            for query in queries(rng, 3):
                assert_exact(db, rows, query, 10)
            assert not [m for m in lines if "lists looked up at" in m], lines
            db.execute("set hybrid_search.sparse_skip_lists = on")
            for _merged in (False, True):
                lines.clear()
                db.execute("set client_min_messages = debug1")
                for query in queries(rng, 6):
                    for k in KS:
                        assert_exact(db, rows, query, k)
                    assert_exact(db, rows, query, 100, where="tenant = 3", visible=tenant3)
                db.execute("reset client_min_messages")
                assert sum("lists looked up at" in m for m in lines) >= 4, lines
                assert check(db)["consistent"]
                db.execute("update am_items set v = v where id % 7 = 0")
                db.execute("vacuum am_items")
        finally:
            drop_items(db)


def test_a_first_batch_whose_first_rows_score_highest_is_exact(db):
    """The first batch's candidates are collected in row order while the floor
    they must reach rises to the batch's N-th best key so far: a floor taken
    from fewer rows (here the first row, far ahead of the others) would drop the
    third row, which the left-out long list puts ahead of the second."""
    rng = np.random.default_rng(16)
    vectors = [{0: 0.1} for _ in range(20000)]  # token 0: a long list in every row
    for i, weight in ((0, 5.0), (2, 4.95), (3, 4.88)):
        vectors[i] = {0: 0.1, 1: weight}
    del vectors[2][0]
    for i in range(4, 1000):
        vectors[i][1] = float(rng.uniform(0.5, 1.0))
    rows = create_items(db, vectors)
    db.execute("set hybrid_search.sparse_batch_size = 10")
    db.execute("set hybrid_search.sparse_skip_lists = on")
    with notices(db) as lines:
        try:
            db.execute("set client_min_messages = debug1")
            for k in (3, 10, 100):
                found = assert_exact(db, rows, {0: 1.0, 1: 1.0}, k)
                assert [i for i, _ in found[:3]] == [0, 3, 2]
            assert any("1 of 2 query terms' lists looked up" in m for m in lines), lines
        finally:
            drop_items(db)


def test_a_batch_whose_sampled_floor_is_too_high_is_exact(db):
    """A later batch offers its heap only rows above a floor sampled from every
    (batch / 4)-th slot. Here the sampled rows (one in 64, as the second batch
    of 256 samples) are the only high-scoring ones, so fewer than 256 rows reach
    that floor: the pass must be made again without it, or the batch comes out
    short and a positive-only scan ends early."""
    vectors = [
        {0: 0.1, 1: 5.0 + i / 10000 if i % 64 == 32 else 0.5 + (i % 97) / 1000}
        for i in range(10000)
    ]
    rows = create_items(db, vectors)
    # every row the same size, so that row i lies in slot i
    per_page = db.execute(
        "select count(*) from am_items"
        " group by (ctid::text::point)[0] order by (ctid::text::point)[0]"
    ).fetchall()
    assert len(set(per_page[:-1])) == 1
    db.execute("set hybrid_search.sparse_batch_size = 64")
    db.execute("set hybrid_search.sparse_positive_only = on")
    try:
        found = assert_exact(db, rows, {0: 1.0, 1: 1.0}, 300)
        assert len({i for i, _ in found if i % 64 == 32}) == len(range(32, 10000, 64))
    finally:
        drop_items(db)


def test_open_scans_never_share_slot_arrays(items):
    """A scan that ranks every row keeps its sums until it ends, in an array kept
    for the backend's next scans (extension/sparse_slots.c): a cursor's scan left
    open while other scans come and go in its transaction, and in the next one,
    ranks its later batches from its own sums, not theirs."""
    conn, rows, rng = items
    qa, qb = queries(rng, 2)
    sql = "select id, v <#> %s::sparsevec from am_items order by v <#> %s::sparsevec limit 300"
    conn.execute("set enable_indexscan = off")
    expected = conn.execute(sql, [literal(qa)] * 2).fetchall()
    conn.execute("reset enable_indexscan")
    with conn.transaction():
        conn.execute("declare a cursor for " + sql, [literal(qa)] * 2)
        first = conn.execute("fetch 50 from a").fetchall()  # the first batch
        for k in (10, 100, 1000):
            assert_exact(conn, rows, qb, k)
        rest = conn.execute("fetch all from a").fetchall()  # batches from a's sums
    assert [d for _, d in first + rest] == [d for _, d in expected]
    assert_exact(conn, rows, qa, 300)


def kept_bytes(conn):
    """Bytes the backend keeps for its scans' arrays of sums (extension/sparse_slots.c)."""
    return conn.execute(
        "select coalesce(sum(total_bytes), 0) from pg_backend_memory_contexts"
        " where name = 'sparse_inverted slot arrays'"
    ).fetchone()[0]


def heap_positions(conn):
    """am_items' heap tuple positions: the slots of a scan's array."""
    return conn.execute(
        "select (max((ctid::text::point)[0]) + 1) * max((ctid::text::point)[1]) from am_items"
    ).fetchone()[0]


def test_slot_arrays_are_reused_after_an_aborted_scan(items):
    """The arrays a backend keeps for its scans (memory context 'sparse_inverted
    slot arrays') are reused query after query, and one lent to a scan that an
    error ended is free again once its transaction is over: the kept memory
    does not grow."""
    conn, rows, rng = items
    qa, qb = queries(rng, 2)
    assert_exact(conn, rows, qa, 10)
    after_one = kept_bytes(conn)
    assert after_one >= heap_positions(conn) * 8
    for k in KS:
        assert_exact(conn, rows, qb, k)
    assert kept_bytes(conn) == after_one
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        conn.execute(
            "declare a cursor for select id from am_items order by v <#> %s::sparsevec",
            [literal(qa)],
        )
        conn.execute("fetch 1 from a")  # the scan holds its array
        conn.execute("select 1 / 0")
    for k in KS:
        assert_exact(conn, rows, qa, k)
    assert kept_bytes(conn) == after_one


def test_kept_arrays_stay_within_sparse_kept_memory(items, dsn):
    """hybrid_search.sparse_kept_memory bounds what a backend keeps between scans:
    below one array nothing is kept (each scan allocates and frees its own), and
    lowering it frees what is kept past it; the rows are the same either way."""
    conn, _, rng = items
    (query,) = queries(rng, 1)
    expected = by_index(conn, query, 100)
    with connect(dsn) as other:
        other.execute("set enable_seqscan = off")
        array = heap_positions(other) * 8
        other.execute(f"set hybrid_search.sparse_kept_memory = '{max(array // 1024 - 1, 0)}kB'")
        assert by_index(other, query, 100) == expected
        assert kept_bytes(other) < array
        other.execute("reset hybrid_search.sparse_kept_memory")
        assert by_index(other, query, 100) == expected
        assert kept_bytes(other) >= array
        other.execute("set hybrid_search.sparse_kept_memory = 0")
        assert by_index(other, query, 100) == expected
        assert kept_bytes(other) < array


@pytest.mark.parametrize(("setting", "values"), SCAN_SETTINGS)
def test_scan_settings_keep_rows_and_scores(items, setting, values):
    """With hybrid_search.sparse_simd off a scan runs the scalar loops that a CPU
    without AVX-512 runs; with a small hybrid_search.sparse_window_slots it fills
    its sums in many windows, which cut through posting blocks. Either way: the
    same rows and distances, bit for bit, at every k, under a filter and with
    pending rows; and all exact."""
    conn, rows, rng = items
    tenant3 = {i for i in rows if i % 10 == 3}
    conn.execute("set hybrid_search.sparse_pending_limit = 100000")  # keep rows pending
    try:
        for j, v in enumerate(random_vectors(rng, 50)):
            i = 5000 + j
            conn.execute("insert into am_items values (%s, %s, %s)", [i, i % 10, literal(v)])
            rows[i] = v
            if i % 10 == 3:
                tenant3.add(i)
        assert_setting_agrees(
            conn, setting, values, queries(rng, 4), KS, [("true", None), ("tenant = 3", tenant3)],
            lambda query, k, where: by_index(conn, query, k, where),
            lambda query, k, where, visible: assert_exact(conn, rows, query, k, where, visible),
        )  # fmt: skip
    finally:
        conn.execute("reset hybrid_search.sparse_pending_limit")


def test_exact_with_negative_weights(items):
    """Query weights of both signs: rows' keys also sum the products' absolute
    values (rank_all's second array), and rows scoring <= 0 come after the others."""
    conn, rows, rng = items
    for query in queries(rng, 4):
        signed = {t: (w if rng.random() < 0.5 else -w) for t, w in query.items()}
        for k in KS:
            assert_exact(conn, rows, signed, k)
    tenant3 = {i for i in rows if i % 10 == 3}
    conn.execute("set hybrid_search.sparse_batch_size = 10")  # many batches
    query = {t: -w for t, w in queries(rng, 1)[0].items()}
    for k in [10, 300, 1000]:
        assert_exact(conn, rows, query, k, where="tenant = 3", visible=tenant3)


def test_exact_when_the_heap_is_sparser_than_its_indexed_rows(db):
    """A partial index over 1% of a table of small rows: the heap positions
    (blocks times the largest offset) outnumber the indexed rows more than 4 to 1,
    so the scan ranks batch by batch (MaxScore) instead of every row at once;
    its order is exact all the same, with a filter and many batches."""
    rng = np.random.default_rng(41)
    vectors = [v if v is not None else {} for v in random_vectors(rng, 1000)]
    rows = {i * 100: v for i, v in enumerate(vectors)}
    db.execute("drop table if exists am_items")
    db.execute("create table am_items (id int primary key, tenant int, v sparsevec)")
    db.execute(
        "insert into am_items select g, g / 100 % 10, null from generate_series(0, 99999) as g"
    )
    with db.cursor() as cur:
        cur.executemany(
            "update am_items set v = %s where id = %s",
            [(literal(v), i) for i, v in rows.items()],
        )
    db.execute("vacuum full am_items")
    db.execute(
        "create index am_items_v_idx on am_items using sparse_inverted (v) where v is not null"
    )
    db.execute("analyze am_items")
    db.execute("set enable_seqscan = off")
    try:
        blocks, offsets = db.execute(
            "select max((ctid::text::point)[0]) + 1, max((ctid::text::point)[1]) from am_items"
        ).fetchone()
        assert blocks * offsets > 4 * len(rows) + 65536
        tenant0 = {i for i in rows if i // 100 % 10 == 0}
        for query in queries(rng, 4):
            for k in KS:
                assert_exact(db, rows, query, k, where="v is not null")
        db.execute("set hybrid_search.sparse_batch_size = 10")
        for query in queries(rng, 2):
            for k in [10, 300, 1000]:
                assert_exact(db, rows, query, k, where="v is not null and tenant = 0",
                             visible=tenant0)  # fmt: skip
        assert check(db, "am_items_v_idx")["consistent"]
    finally:
        drop_items(db)


def test_exact_when_a_tokens_rows_lie_far_apart(db):
    """A first page of 226 small rows makes every heap page 226 slots; then 8 rows
    per page: a token's posting block whose rows lie more than 65,535 slots apart
    stores 4-byte slot deltas, not 2-byte ones. The scan still ranks every row at
    once, exactly, with and without AVX-512, before and after a merge, and the check
    finds the index consistent."""
    rng = np.random.default_rng(43)
    vectors = random_vectors(rng, 2500)
    rows = {i: v for i, v in enumerate(vectors)}
    db.execute("drop table if exists am_items")
    db.execute("create table am_items (id int primary key, tenant int, v sparsevec, pad text)")
    db.execute("insert into am_items select -g, 0, null, null from generate_series(1, 226) as g")
    with db.cursor().copy("copy am_items (id, tenant, v, pad) from stdin") as copy:
        for i, v in rows.items():
            # every row about 960 bytes, 8 to a page, whatever its tokens
            copy.write_row((i, i % 10, literal(v), "x" * (908 - 8 * len(v or {}))))
    db.execute("create index am_items_v_idx on am_items using sparse_inverted (v)")
    db.execute("analyze am_items")
    db.execute("set enable_seqscan = off")
    try:
        ctids = dict(
            db.execute(
                "select id, ((ctid::text::point)[0] * 226 + (ctid::text::point)[1] - 1)::bigint"
                " from am_items where id >= 0"
            ).fetchall()
        )
        blocks, offsets = db.execute(
            "select max((ctid::text::point)[0]) + 1, max((ctid::text::point)[1]) from am_items"
        ).fetchone()
        assert offsets == 226 and 65536 < blocks * offsets <= 4 * (len(rows) + 226) + 65536
        # tokens with a 128-posting block spanning more than a uint16 of slots
        slots_of = {}
        for i, v in rows.items():
            for t in v or {}:
                slots_of.setdefault(t, []).append(ctids[i])
        wide = []
        for t, slots in slots_of.items():
            slots.sort()
            blocks = [slots[j : j + 128] for j in range(0, len(slots), 128)]
            if any(b[-1] - b[0] > 65535 for b in blocks):
                wide.append(t)
        assert len(wide) >= 5
        rows.update({-g: None for g in range(1, 227)})
        wide_queries = [{t: 1.0 + j for j, t in enumerate(wide[:5])}, *queries(rng, 3)]
        for simd in ("on", "off"):
            db.execute(f"set hybrid_search.sparse_simd = {simd}")
            for query in wide_queries:
                for k in KS:
                    assert_exact(db, rows, query, k)
        db.execute("delete from am_items where id % 7 = 0")
        db.execute("vacuum am_items")
        rows = {i: v for i, v in rows.items() if i % 7 != 0}
        for query in wide_queries:
            for k in KS:
                assert_exact(db, rows, query, k)
        assert check(db, "am_items_v_idx")["consistent"]
    finally:
        drop_items(db)


def test_rows_whose_place_is_certain_are_not_rechecked(db):
    """The executor recomputes <#> from a row the index returns (here: reading its
    vector from TOAST) only where the index's bounds on the row's score leave its
    place in doubt. A filter that keeps 1 row in 10 of the 50 fetched: with
    distinct scores only the 5 rows kept are read (for the query's own <#>), with
    equal scores every row is. The order is the sequential scan's either way."""
    rng = np.random.default_rng(43)
    db.execute("drop table if exists am_toasted")
    db.execute("create table am_toasted (id int primary key, v sparsevec)")
    db.execute("alter table am_toasted alter column v set storage external")  # out of line
    # every row: 1,000 terms (8 kB, stored out of line); term 0 weighs the row's
    # id in distinct steps, term 1 the same for every row
    for i in range(300):
        weights = {0: 1 + i / 64, 1: 1.0}
        weights.update({int(t): 0.5 for t in rng.choice(np.arange(2, DIM), 998, replace=False)})
        db.execute("insert into am_toasted values (%s, %s)", [i, literal(weights)])
    db.execute("create index am_toasted_v_idx on am_toasted using sparse_inverted (v)")
    db.execute("set enable_seqscan = off")
    sql = "select id, v <#> %s::sparsevec from am_toasted where id %% 10 = 0 order by 2 limit 5"
    try:
        measured = {}
        for name, query in (("distinct", {0: 1.0}), ("tied", {1: 1.0})):
            before = toast_blocks_read(db, "am_toasted")
            found = db.execute(sql, [literal(query)]).fetchall()
            measured[name] = toast_blocks_read(db, "am_toasted") - before
            db.execute("set enable_indexscan = off")
            expected = db.execute(sql.replace("order by 2", "order by 2, 1"), [literal(query)])
            expected = expected.fetchall()
            db.execute("reset enable_indexscan")
            if name == "distinct":
                assert found == expected == [(i, -(1 + i / 64)) for i in (290, 280, 270, 260, 250)]
            else:  # every row ties: any 5 of them
                assert [d for _, d in found] == [d for _, d in expected] == [-1.0] * 5
        # tied: no row's place is certain until all 300 are seen; each is read
        assert measured["tied"] >= 300, measured
        per_row = measured["tied"] / 300
        # distinct: the 5 rows kept, for the query's own <#> (rechecking the 50
        # fetched would read 55 rows), and a batch's last row at most
        assert measured["distinct"] <= 7 * per_row, measured
    finally:
        db.execute("reset enable_seqscan")
        db.execute("drop table am_toasted")


def test_exact_under_writes_and_vacuum(items):
    conn, rows, rng = items
    conn.execute("set hybrid_search.sparse_pending_limit = 100000")  # keep rows pending
    new = random_vectors(rng, 400)
    for j, v in enumerate(new):
        i = 3000 + j
        conn.execute("insert into am_items values (%s, %s, %s)", [i, i % 10, literal(v)])
        rows[i] = v
    for i in rng.choice(3000, 300, replace=False).tolist():
        v = random_vectors(rng, 1)[0]
        conn.execute("update am_items set v = %s where id = %s", [literal(v), i])
        rows[i] = v
    for i in rng.choice(3400, 300, replace=False).tolist():
        conn.execute("delete from am_items where id = %s", [i])
        rows.pop(i, None)
    conn.execute("reset hybrid_search.sparse_pending_limit")
    report = check(conn)
    assert report["consistent"], report
    assert report["pending_rows"] > 0 and report["rows_not_visible"] > 0
    qs = queries(rng, 5)
    for query in qs:
        for k in KS:
            assert_exact(conn, rows, query, k)
    conn.execute("vacuum am_items")
    report = check(conn)
    assert report["consistent"], report
    assert report["pending_rows"] == 0 and report["rows_not_visible"] == 0
    for query in qs:
        for k in KS:
            assert_exact(conn, rows, query, k)


def test_merges_of_appended_rows_are_exact(items):
    """Rows appended in TID order and merged every ~200 inserts: a merge copies the
    old blocks no new row goes into as they are (sparse_build.c), and writes the
    last part-filled block of a term again with its new postings."""
    conn, rows, rng = items
    conn.execute("set hybrid_search.sparse_pending_limit = 16")  # 1/16 of the rows rules
    generation = check(conn)["generation"]
    for start in range(3000, 4500, 100):
        with conn.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
            for i, v in enumerate(random_vectors(rng, 100), start):
                copy.write_row((i, i % 10, literal(v)))
                rows[i] = v
    report = check(conn)
    assert report["consistent"], report
    assert report["generation"] > generation + 4, report  # merges
    for query in queries(rng, 5):
        for k in KS:
            assert_exact(conn, rows, query, k)


def test_a_merge_of_rows_out_of_tid_order_is_exact(items):
    """A merge of more than 65,536 postings whose rows are not in TID order (updated
    in random order, each new version where its page has room) sorts them by every
    digit of the TID, not only the term's."""
    conn, rows, rng = items
    conn.execute("alter table am_items set (fillfactor = 40)")
    conn.execute("vacuum full am_items")
    conn.execute("set hybrid_search.sparse_pending_limit = 100000")  # keep rows pending
    postings = 0
    for i in rng.permutation(3000).tolist():
        v = random_vectors(rng, 1, 60, 120)[0]
        conn.execute("update am_items set v = %s where id = %s", [literal(v), i])
        rows[i] = v
        postings += len(v or {})
    assert postings > 65536
    tids = [
        tuple(map(int, t.strip("()").split(",")))
        for (t,) in conn.execute("select ctid::text from am_items order by xmin::text::bigint")
    ]
    assert tids != sorted(tids)
    pending = check(conn)
    assert pending["pending_rows"] == 3000, pending
    conn.execute("set hybrid_search.sparse_pending_limit = 16")
    conn.execute("insert into am_items values (3000, 0, null)")  # merges
    rows[3000] = None
    report = check(conn)
    assert report["consistent"] and report["pending_rows"] == 0, report
    for query in queries(rng, 5):
        for k in KS:
            assert_exact(conn, rows, query, k)


def test_filter_returns_k_rows_whenever_k_match(items):
    conn, rows, rng = items
    tenant3 = {i for i in rows if i % 10 == 3}
    conn.execute("set hybrid_search.sparse_batch_size = 10")  # many batches
    for query in queries(rng, 4):
        for k in [10, 100, 300, 400]:
            assert_exact(conn, rows, query, k, where="tenant = 3", visible=tenant3)


@contextlib.contextmanager
def tenant3_reader(conn, policy):
    """The connection as am_reader, a role whose policy on am_items is policy."""
    conn.execute("alter table am_items enable row level security")
    conn.execute(f"create policy tenant3 on am_items using ({policy})")
    conn.execute("drop role if exists am_reader")
    conn.execute("create role am_reader")
    conn.execute("grant select on am_items to am_reader")
    try:
        conn.execute("set role am_reader")
        yield
    finally:
        conn.execute("reset role")
        conn.execute("drop policy tenant3 on am_items")
        conn.execute("alter table am_items disable row level security")
        conn.execute("revoke all on am_items from am_reader")
        conn.execute("drop role am_reader")


def filter_column_index(conn, column="tenant", opclass="int4_filter_ops"):
    """am_items_v_idx again with a filter column, so a condition on it is an
    index condition; a btree on tenant finds its rows."""
    conn.execute("drop index am_items_v_idx")
    conn.execute(
        f"create index am_items_v_idx on am_items using sparse_inverted (v, {column} {opclass})"
    )
    conn.execute("create index if not exists am_items_tenant_idx on am_items (tenant)")
    # a scan of that btree and a sort is the planner's other choice
    conn.execute("set enable_bitmapscan = off")
    conn.execute("set enable_sort = off")


def index_condition(conn, query, where):
    return "\n".join(
        r[0]
        for r in conn.execute(
            f"explain (costs off) select id from am_items where {where}"
            " order by v <#> %s::sparsevec limit 10",
            [literal(query)],
        )
    )


def rows_rechecked_away(conn, query, k, where):
    """Rows the index scan returned that its condition's recheck dropped."""
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "explain (analyze, costs off, timing off, summary off) select id from am_items"
            f" where {where} order by v <#> %s::sparsevec limit %s",
            [literal(query), k],
        )
    )
    assert "am_items_v_idx" in plan, plan
    removed = re.search(r"Rows Removed by Index Recheck: (\d+)", plan)
    return int(removed.group(1)) if removed else 0


def test_a_filter_column_ranks_only_the_rows_another_index_finds(items):
    """With tenant as a filter column, tenant = x is the index scan's condition:
    exact for every k, through batches, the pending list, updates and deletes,
    and with no other index to find the rows; a few rows narrow from the first
    batch."""
    conn, rows, rng = items
    filter_column_index(conn)
    conn.execute("set hybrid_search.sparse_batch_size = 10")
    query = queries(rng, 1)[0]
    assert "Index Cond: (tenant = 3)" in index_condition(conn, query, "tenant = 3")
    # the btree's 300 rows, read in TID order, narrow from the first batch: none is
    # rechecked away; at batches of 1 row too, past 256 keys a first-batch row, as
    # 300 * 300 <= 256 * 1 * 3,000: the condition would reject about nine rows a
    # row it passes (first_batch_keys)
    assert rows_rechecked_away(conn, query, 1000, "tenant = 3") == 0
    conn.execute("set hybrid_search.sparse_batch_size = 1")
    assert rows_rechecked_away(conn, query, 1000, "tenant = 3") == 0
    conn.execute("set hybrid_search.sparse_batch_size = 10")
    tenant3 = {i for i in rows if i % 10 == 3}
    for query in queries(rng, 3):
        for k in [1, 10, 100, 400]:
            assert_exact(conn, rows, query, k, where="tenant = 3", visible=tenant3)
        # a condition no row meets, and one that is NULL (a generic plan's parameter)
        assert by_index(conn, query, 10, "tenant = 11") == []
    conn.execute("set plan_cache_mode = force_generic_plan")
    try:
        conn.execute(
            "prepare null_tenant (int, sparsevec) as select id from am_items where tenant = $1"
            " order by v <#> $2 limit 10"
        )
        vector = f"'{literal(query)}'"
        plan = conn.execute(f"explain (costs off) execute null_tenant (null, {vector})")
        assert "Index Cond: (tenant = $1)" in "\n".join(r[0] for r in plan)
        assert conn.execute(f"execute null_tenant (null, {vector})").fetchall() == []
        assert conn.execute(f"execute null_tenant (3, {vector})").fetchall()
    finally:
        conn.execute("deallocate null_tenant")
        conn.execute("reset plan_cache_mode")
    # rows the pending list holds, rows moved to tenant 3, rows deleted
    new_rows = random_vectors(rng, 200)
    with conn.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
        for i, v in enumerate(new_rows, start=len(rows)):
            copy.write_row((i, 3, literal(v)))
            rows[i] = v
    conn.execute("update am_items set tenant = 3 where id % 10 = 4 and id < 1000")
    conn.execute("delete from am_items where tenant = 3 and id % 7 = 0")
    visible = {r[0] for r in conn.execute("select id from am_items where tenant = 3")}
    # narrowed from the first batch, the fourth, or never: the same rows
    assert_setting_agrees(
        conn, "hybrid_search.sparse_filter_after", ("0", "1", "3", "1000"), queries(rng, 3),
        [10, 100, 1000], [("tenant = 3", visible)],
        lambda query, k, where: by_index(conn, query, k, where),
        lambda query, k, where, visible: assert_exact(conn, rows, query, k, where, visible),
    )  # fmt: skip
    conn.execute("set hybrid_search.sparse_filter_after = 0")
    assert rows_rechecked_away(conn, query, 1000, "tenant = 3") == 0
    conn.execute("reset hybrid_search.sparse_filter_after")
    # a condition most rows meet is not read for a first batch of 1 row (its 2,600
    # rows squared pass 256 * 1 * the index's rows, the old versions included): the
    # first three batches (1, 4 and 16 rows) take any row, and the executor rechecks
    # away those of tenant 3
    conn.execute("update am_items set tenant = 20 where tenant <> 3")
    conn.execute("set hybrid_search.sparse_batch_size = 1")
    assert 0 < rows_rechecked_away(conn, query, 1000, "tenant = 20") <= 21
    conn.execute("set hybrid_search.sparse_batch_size = 10")
    conn.execute("vacuum am_items")
    conn.execute("drop index am_items_tenant_idx")
    # nothing finds the rows now: every row is ranked and the executor filters
    assert rows_rechecked_away(conn, query, 1000, "tenant = 3") > 210
    for query in queries(rng, 2):
        assert_exact(conn, rows, query, 100, where="tenant = 3", visible=visible)
    assert check(conn)["consistent"]


def test_a_filter_column_is_exact_when_the_bitmap_is_lossy(db):
    """A bitmap past work_mem keeps whole heap pages: every row there is ranked and
    the executor's recheck drops those that do not match."""
    rng = np.random.default_rng(7)
    # a few rows per heap page: the bitmap of one tenant spans more pages than
    # 64 kB of work_mem holds exactly
    rows = create_items(db, random_vectors(rng, 20000, 1, 8))
    db.execute("alter table am_items set (fillfactor = 10)")
    db.execute("vacuum full am_items")
    filter_column_index(db)
    # a hash index's rows come only as a bitmap (a btree's are read in TID order)
    db.execute("drop index am_items_tenant_idx")
    db.execute("create index am_items_tenant_idx on am_items using hash (tenant)")
    db.execute("set hybrid_search.sparse_batch_size = 10")
    tenant3 = {i for i in rows if i % 10 == 3}
    try:
        db.execute("set work_mem = '64kB'")
        assert rows_rechecked_away(db, queries(rng, 1)[0], 1000, "tenant = 3") > 0
        for work_mem in ["64kB", "4MB"]:
            db.execute(f"set work_mem = '{work_mem}'")
            for query in queries(rng, 2):
                for k in [10, 1000]:
                    assert_exact(db, rows, query, k, where="tenant = 3", visible=tenant3)
    finally:
        drop_items(db)


def test_a_policy_on_an_indexed_expression_is_the_scans_condition(items):
    """A row-level-security policy on an expression that is both a filter column and
    a btree's column: the role's scan ranks only its rows, exactly."""
    conn, rows, rng = items
    conn.execute("alter table am_items add column meta jsonb")
    conn.execute("update am_items set meta = jsonb_build_object('tenant', tenant)")
    expression = "((meta->>'tenant')::int)"
    filter_column_index(conn, expression)
    conn.execute(f"create index am_items_meta_tenant_idx on am_items ({expression})")
    with tenant3_reader(conn, f"{expression} = 3"):
        conn.execute("set hybrid_search.sparse_batch_size = 10")
        query = queries(rng, 1)[0]
        assert "Index Cond: (((meta ->> 'tenant'::text))::integer = 3)" in index_condition(
            conn, query, "true"
        )
        assert rows_rechecked_away(conn, query, 1000, "true") <= 210
        tenant3 = {i for i in rows if i % 10 == 3}
        for query in queries(rng, 3):
            for k in [10, 100, 1000]:
                assert_exact(conn, rows, query, k, visible=tenant3)


def test_a_partial_index_holds_and_ranks_only_its_rows(items):
    """A partial index (WHERE tenant = 3) is the planner's choice for that condition,
    even over an index with tenant as a filter column (both read the query's lists; the
    partial one's are shorter), exact for every k, and keeps only its rows through
    inserts, updates moving rows in and out, deletes and VACUUM; the check counts its
    rows only."""
    conn, rows, rng = items
    filter_column_index(conn)
    conn.execute(
        "create index am_items_t3_idx on am_items using sparse_inverted (v) where tenant = 3"
    )
    conn.execute("set hybrid_search.sparse_batch_size = 10")

    def tenant3():
        return {r[0] for r in conn.execute("select id from am_items where tenant = 3")}

    def assert_partial_exact(ks):
        visible = tenant3()
        assert check(conn, "am_items_t3_idx")["visible_rows"] == len(visible)
        for query in queries(rng, 2):
            for k in ks:
                assert_exact(conn, rows, query, k, "tenant = 3", visible, "am_items_t3_idx")
            # other conditions are the full index's
            by_index(conn, query, 10, "tenant = 4")

    assert_partial_exact([1, 10, 100, 400])
    new_rows = random_vectors(rng, 200)
    with conn.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
        for i, v in enumerate(new_rows, start=len(rows)):
            copy.write_row((i, i % 2 * 3, literal(v)))
            rows[i] = v
    conn.execute("update am_items set tenant = 3 where id % 10 = 4 and id < 1000")
    conn.execute("update am_items set tenant = 5 where id % 10 = 3 and id < 1000")
    conn.execute("delete from am_items where tenant = 3 and id % 7 = 0")
    assert check(conn, "am_items_t3_idx")["consistent"]
    assert_partial_exact([10, 1000])
    conn.execute("vacuum am_items")
    report = check(conn, "am_items_t3_idx")
    assert report["consistent"] and report["rows_not_visible"] == 0, report
    assert_partial_exact([10, 1000])


def test_only_the_first_column_is_ranked(items):
    conn, _, _ = items
    with pytest.raises(psycopg.errors.InvalidObjectDefinition, match="must be a ranked one"):
        conn.execute("create index on am_items using sparse_inverted (tenant, v)")
    with pytest.raises(psycopg.errors.InvalidObjectDefinition, match="must be a filter column"):
        conn.execute("create index on am_items using sparse_inverted (v, v)")


def test_row_level_security_returns_k_visible_rows(items):
    conn, rows, rng = items
    with tenant3_reader(conn, "tenant = 3"):
        tenant3 = {i for i in rows if i % 10 == 3}
        for query in queries(rng, 4):
            for k in [10, 100, 300, 1000]:
                assert_exact(conn, rows, query, k, visible=tenant3)


def test_concurrent_writers_and_merges(items, dsn):
    """A writer inserts, updates and deletes, merging the pending list often, while
    a reader compares the index with a sequential scan in one snapshot."""
    conn, _, rng = items

    def write_rows(w, local, i):
        for v in random_vectors(local, 20):
            w.execute("insert into am_items values (%s, 0, %s)", [i, literal(v)])
            i += 1
        return i

    def read(r):
        n = 0
        for query in queries(rng, 2):
            with r.transaction():
                r.execute("set transaction isolation level repeatable read")
                for k in [10, 1000]:
                    found = by_index(r, query, k)
                    expected = by_seqscan(r, query, k)
                    assert [d for _, d in found] == [d for _, d in expected]
                    n += 1
        return n

    read_while_writing(dsn, "am_items", write_rows, read)
    assert check(conn)["consistent"]


def test_sparse_search_uses_the_index(db):
    insert(db, "index scans", "vacuum dead tuples", "replica lag index", "nothing shared")
    # four rows: a sequential scan would be cheaper
    with nested_plans(db, ("enable_seqscan", "off")) as plans:
        found = db.execute(
            "select id, score from sparse_search(embed_sparse('index'), 10)"
        ).fetchall()
    assert any("Index Scan using documents_sparse_idx" in p for p in plans), plans
    expected = db.execute(
        "select id, score from sparse_search_scan(embed_sparse('index'), 10)"
    ).fetchall()
    assert found == expected and len(found) == 2


def test_hybrid_search_check_reports_the_index_and_damage(db):
    insert(db, "index scans", "vacuum dead tuples")
    checks = {n: (s, d) for n, s, d in db.execute("select * from hybrid_search_check()")}
    assert checks["sparse_access_method"][0] == "ok", checks["sparse_access_method"]
    # a row written while the index took no inserts: the index misses it
    db.execute(
        "update pg_index set indisready = false where indexrelid = 'documents_sparse_idx'::regclass"
    )
    try:
        insert(db, "written behind the index's back")
    finally:
        db.execute(
            "update pg_index set indisready = true"
            " where indexrelid = 'documents_sparse_idx'::regclass"
        )
    checks = {n: (s, d) for n, s, d in db.execute("select * from hybrid_search_check()")}
    status, detail = checks["sparse_access_method"]
    assert status == "error" and "is not in the index" in detail, detail
    db.execute("reindex index documents_sparse_idx")
    checks = {n: (s, d) for n, s, d in db.execute("select * from hybrid_search_check()")}
    assert checks["sparse_access_method"][0] == "ok"


def test_hostile_inputs(db):
    db.execute("set enable_seqscan = off")
    try:
        for bad, message in [
            ("{1:NaN}/5", "NaN not allowed"),
            ("{1:Infinity}/5", "infinite value"),
            ("{1:1}/1000000001", "more than 1000000000 dimensions"),
            ("{0:1}/5", "index out of bounds"),
        ]:
            with pytest.raises(psycopg.Error, match=message):
                db.execute(
                    "select id from documents order by sparse <#> %s::sparsevec limit 1", [bad]
                )
        with pytest.raises(psycopg.Error, match="different sparsevec dimensions"):
            insert(db, "a row so the scan meets a vector")
            db.execute("select id from documents order by sparse <#> '{1:1}/7'::sparsevec limit 1")
        with pytest.raises(psycopg.Error, match="is not a sparse_inverted index"):
            db.execute("select sparse_inverted_check('documents_pkey')")
        assert db.execute("select sparse_inverted_check(null)").fetchone()[0] is None
        with pytest.raises(psycopg.Error, match="query vector must not be NULL"):
            db.execute("select * from sparse_search(null::sparsevec, 10)")
        empty = db.execute("select count(*) from sparse_search('{}/250002'::sparsevec, 10)")
        assert empty.fetchone()[0] == 0
    finally:
        db.execute("reset enable_seqscan")


@pytest.fixture(scope="module")
def am_crash_cluster(scratch):
    yield from own_cluster(scratch / "am-crash-cluster", 5436)


def test_kill_9_during_copy_leaves_a_consistent_index(am_crash_cluster, layout, model_dir):
    dsn = create_database(am_crash_cluster, layout, model_dir, "am_crash")
    rng = np.random.default_rng(9)
    with connect(dsn) as conn:
        conn.execute("create table am_items (id int primary key, tenant int, v sparsevec)")
        conn.execute("create index am_items_v_idx on am_items using sparse_inverted (v)")
        with conn.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
            for i, v in enumerate(random_vectors(rng, 2000)):
                copy.write_row((i, 0, literal(v)))
        committed = {i for (i,) in conn.execute("select id from am_items")}

    def copy_forever(c):
        # merges all along, so that the kill can hit one
        c.execute("set hybrid_search.sparse_pending_limit = 16")
        with c.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
            local = np.random.default_rng(1)
            for i in range(10000, 10_000_000):
                copy.write_row((i, 0, literal(random_vectors(local, 1)[0])))

    kill_midway(dsn, "copy am_items", copy_forever)  # well into the COPY and its merges
    conn = None
    deadline = time.monotonic() + 60
    while conn is None:
        try:
            conn = connect(dsn)
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    with conn:
        assert {i for (i,) in conn.execute("select id from am_items")} == committed
        report = check(conn)
        assert report["consistent"], report
        assert report["rows_not_visible"] > 0  # the killed COPY's rows reached the index
        conn.execute("set enable_seqscan = off")
        for query in queries(rng, 3):
            for k in [10, 1000]:
                found = by_index(conn, query, k)
                expected = by_seqscan(conn, query, k)
                assert [d for _, d in found] == [d for _, d in expected]
        conn.execute("vacuum am_items")
        report = check(conn)
        assert report["consistent"] and report["rows_not_visible"] == 0, report


META_MAGIC_AT, META_VERSION_AT, META_SEG_MAX_BLOCK_AT = 24, 28, 60  # after the page header


@pytest.mark.parametrize("window", [None, 1])
def test_a_posting_past_the_segments_rows_is_reported(am_crash_cluster, layout, model_dir, window):
    """A metapage that understates the segment's largest heap block (segMaxBlock 0):
    every posting of a row on a later block lands past the scan's array, and the scan
    reports index corruption, whatever the window size, instead of leaving those rows out."""
    dsn = create_database(am_crash_cluster, layout, model_dir, "am_corrupt")
    rng = np.random.default_rng(3)
    with connect(dsn) as conn:
        conn.execute("create table am_items (id int primary key, tenant int, v sparsevec)")
        with conn.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
            for i, v in enumerate(random_vectors(rng, 2000)):
                copy.write_row((i, 0, literal(v)))
        conn.execute("create index am_items_v_idx on am_items using sparse_inverted (v)")
        assert conn.execute("select pg_relation_size('am_items') > 8192").fetchone()[0]
        path = conn.execute("select pg_relation_filepath('am_items_v_idx')").fetchone()[0]
        conn.execute("checkpoint")
    am_crash_cluster.stop()
    index_file = am_crash_cluster.data / path
    with open(index_file, "r+b") as f:
        f.seek(META_MAGIC_AT)
        assert int.from_bytes(f.read(4), "little") == 0x53504958  # "SPIX"
        f.seek(META_SEG_MAX_BLOCK_AT)
        assert int.from_bytes(f.read(4), "little") > 0
        f.seek(META_SEG_MAX_BLOCK_AT)
        f.write((0).to_bytes(4, "little"))
    am_crash_cluster.start()
    with connect(dsn) as conn:
        conn.execute("set enable_seqscan = off")
        if window:
            conn.execute(f"set hybrid_search.sparse_window_slots = {window}")
        with pytest.raises(psycopg.errors.IndexCorrupted, match="beyond the segment's rows"):
            by_index(conn, {0: 1.0}, 10)


OLD_VERSION = "version 2, this library reads 3"


def test_an_index_of_another_format_asks_for_reindex(am_crash_cluster, layout, model_dir):
    """An index whose metapage carries another format version (version 2, whose
    long posting lists had no skip arrays) is read by no path: a scan, an insert and VACUUM
    each raise index corruption with a REINDEX hint, and REINDEX makes it whole."""
    dsn = create_database(am_crash_cluster, layout, model_dir, "am_version")
    rng = np.random.default_rng(5)
    vectors = random_vectors(rng, 500)
    with connect(dsn) as conn:
        conn.execute("create table am_items (id int primary key, tenant int, v sparsevec)")
        with conn.cursor().copy("copy am_items (id, tenant, v) from stdin") as copy:
            for i, v in enumerate(vectors):
                copy.write_row((i, 0, literal(v)))
        conn.execute("create index am_items_v_idx on am_items using sparse_inverted (v)")
        path = conn.execute("select pg_relation_filepath('am_items_v_idx')").fetchone()[0]
        conn.execute("checkpoint")
    am_crash_cluster.stop()
    with open(am_crash_cluster.data / path, "r+b") as f:
        f.seek(META_MAGIC_AT)
        assert int.from_bytes(f.read(4), "little") == 0x53504958  # "SPIX"
        assert int.from_bytes(f.read(4), "little") == 3
        f.seek(META_VERSION_AT)
        f.write((2).to_bytes(4, "little"))
    am_crash_cluster.start()
    with connect(dsn) as conn:
        conn.execute("set enable_seqscan = off")
        for statement in (
            lambda: by_index(conn, {0: 1.0}, 10),
            lambda: conn.execute("insert into am_items values (1000, 0, '{1:1}/5000')"),
            lambda: conn.execute("vacuum am_items"),
        ):
            with pytest.raises(psycopg.errors.IndexCorrupted, match=OLD_VERSION) as e:
                statement()
            assert e.value.diag.message_hint == "REINDEX it."
        conn.execute("reindex index am_items_v_idx")
        rows = dict(enumerate(vectors))
        for query in queries(rng, 3):
            assert_exact(conn, rows, query, 100)
        assert check(conn)["consistent"]


META_SKIP_HEAD_AT = 24 + 120  # SparseMetaPageData.skipHead, after the page header
META_DIR_HEAD_AT = 24 + 20  # SparseMetaPageData.dirHead


def shift_first_slots(f, chunk_at, entries):
    """Each skip entry's first slot one too far (entries: 16 bytes after the chunk's
    8-byte header)."""
    for e in range(entries):
        f.seek(chunk_at + 8 + 16 * e)
        first_slot = int.from_bytes(f.read(8), "little")
        f.seek(chunk_at + 8 + 16 * e)
        f.write((first_slot + 1).to_bytes(8, "little"))


def overcount_entries(f, chunk_at, entries):
    """The chunk's count of entries one more than the list has blocks."""
    f.seek(chunk_at)
    f.write((entries + 1).to_bytes(2, "little"))


PAST_THE_END = 1000  # a block past the test index's end


def dir_head(f):
    """The index's first directory page."""
    f.seek(META_DIR_HEAD_AT)
    return int.from_bytes(f.read(4), "little")


def term_0_entry_at(f):
    """Where term 0's directory entry (the first item of the first directory page) lies
    in the index file."""
    head = dir_head(f)
    f.seek(head * 8192 + 24)  # the first line pointer: 15 bits of offset
    item = int.from_bytes(f.read(4), "little") & 0x7FFF
    f.seek(head * 8192 + item)
    assert int.from_bytes(f.read(4), "little") == 0  # SparseDirEntry.term
    return head * 8192 + item


def link_past_the_end(f, chunk_at, entries):
    """Term 0's directory entry names a skip page past the index's end."""
    f.seek(term_0_entry_at(f) + 28)  # SparseDirEntry.skipBlk
    f.write(PAST_THE_END.to_bytes(4, "little"))


def create_long_list_index(conn):
    """am_items with token 1 in every row (a long list over many pages, with a skip
    array) and token 5 in ten rows, indexed; the index's file path."""
    conn.execute("create table am_items (id int primary key, v sparsevec)")
    conn.execute(
        "insert into am_items select i, format('{1:%s,%s:%s}/3000', 1 + i % 7,"
        " 2 + i % 2000, i / 1000.0)::sparsevec from generate_series(1, 20000) as i"
    )
    conn.execute("create index am_items_v_idx on am_items using sparse_inverted (v)")
    return conn.execute("select pg_relation_filepath('am_items_v_idx')").fetchone()[0]


@pytest.mark.parametrize(
    ("damage", "problem", "raised", "error"),
    [
        (
            shift_first_slots,
            "term 0: skip entry 0 does not give its block",
            psycopg.errors.IndexCorrupted,
            "skip entry of term 0",
        ),
        (
            overcount_entries,
            "term 0: malformed skip array (block {blk}, item 1)",
            psycopg.errors.IndexCorrupted,
            "malformed skip array of term 0",
        ),
        (
            link_past_the_end,
            f"term 0: its skip array leaves the skip pages (block {PAST_THE_END}, item 1)",
            psycopg.errors.DataCorrupted,
            f"could not read block {PAST_THE_END}",
        ),
    ],
    ids=["first slots", "chunk count", "past the end"],
)
def test_a_damaged_skip_array_is_reported(
    am_crash_cluster, layout, model_dir, damage, problem, raised, error
):
    """A skip array whose entries name the wrong first row for their blocks, whose
    chunk claims more entries than its list has blocks, or that its directory entry
    places past the index's end: sparse_inverted_check reports it (a problem, not an
    error), and a scan that looks a left-out list up through it raises an error
    instead of adding another block's weights."""
    dsn = create_database(am_crash_cluster, layout, model_dir, "am_skip_" + damage.__name__)
    with connect(dsn) as conn:
        path = create_long_list_index(conn)
        assert check(conn)["consistent"]
        pages = conn.execute("select pg_relation_size('am_items_v_idx') / 8192").fetchone()[0]
        assert pages < PAST_THE_END
        conn.execute("checkpoint")
    am_crash_cluster.stop()
    with open(am_crash_cluster.data / path, "r+b") as f:
        f.seek(META_SKIP_HEAD_AT)
        skip_head = int.from_bytes(f.read(4), "little")
        f.seek(skip_head * 8192 + 8192 - 16 + 8)  # the page's type and id
        assert f.read(4) == (8).to_bytes(2, "little") + (0xFF85).to_bytes(2, "little")
        f.seek(skip_head * 8192 + 24)  # the first line pointer: 15 bits of offset
        item = int.from_bytes(f.read(4), "little") & 0x7FFF
        f.seek(skip_head * 8192 + item)
        entries = int.from_bytes(f.read(2), "little")
        assert entries == 20000 // 128 + 1  # every block of token 1's list
        damage(f, skip_head * 8192 + item, entries)
    am_crash_cluster.start()
    with connect(dsn) as conn:
        report = check(conn)
        assert not report["consistent"]
        assert problem.format(blk=skip_head) in report["problems"]
        conn.execute("set enable_seqscan = off")
        conn.execute("set hybrid_search.sparse_batch_size = 5")
        conn.execute("set hybrid_search.sparse_skip_lists = on")
        query = "select id from am_items order by v <#> '{1:0.1,5:3}/3000' limit 5"
        with pytest.raises(raised, match=error):
            conn.execute(query).fetchall()
        conn.execute("set hybrid_search.sparse_skip_lists = off")
        assert [r[0] for r in conn.execute(query)] == [18003, 16003, 14003, 12003, 10003]


META_DOC_LIST_HEAD_AT = 24 + 28  # SparseMetaPageData.docListHead, after the page header


def test_a_damaged_row_list_of_a_bm25_index_is_reported(am_crash_cluster, layout, model_dir):
    """A BM25 index's row list keeps each row's length: sparse_inverted_check reports a
    length its postings do not add up to, and a chunk whose count does not fit its size;
    counting a role's statistics over the rows raises index corruption at such a chunk
    instead of reading past it."""
    dsn = create_database(am_crash_cluster, layout, model_dir, "am_row_list")
    with connect(dsn) as conn:
        conn.execute("create table am_docs (id int primary key, tenant int, fts tsvector)")
        conn.execute(
            "insert into am_docs select i, i % 10, to_tsvector('simple',"
            " format('w%s w%s w%s', i % 7, i % 13, i % 7)) from generate_series(1, 2000) as i"
        )
        conn.execute("create index am_docs_fts_idx on am_docs using sparse_inverted (fts)")
        conn.execute("create index am_docs_tenant_idx on am_docs (tenant)")
        conn.execute("alter table am_docs enable row level security")
        conn.execute("create role am_row_list_tenant")
        conn.execute("create policy tenant3 on am_docs to am_row_list_tenant using (tenant = 3)")
        conn.execute("grant select on am_docs to am_row_list_tenant")
        conn.execute("grant execute on function _bm25query_policy_rows to am_row_list_tenant")
        assert check(conn, "am_docs_fts_idx")["consistent"]
        path = conn.execute("select pg_relation_filepath('am_docs_fts_idx')").fetchone()[0]
        conn.execute("checkpoint")
    am_crash_cluster.stop()
    with open(am_crash_cluster.data / path, "r+b") as f:
        f.seek(META_DOC_LIST_HEAD_AT)
        page = int.from_bytes(f.read(4), "little") * 8192
        f.seek(page + 8192 - 16 + 8)  # the page's type and id
        assert f.read(4) == (5).to_bytes(2, "little") + (0xFF85).to_bytes(2, "little")
        f.seek(page + 24)  # the first line pointer: 15 bits of offset
        item = page + (int.from_bytes(f.read(4), "little") & 0x7FFF)
        f.seek(item)
        n = int.from_bytes(f.read(2), "little")
        assert n == 512
        f.seek(item + 4 + 7 * n)  # the first row's length, after the TIDs and flags
        assert struct.unpack("<f", f.read(4)) == (3.0,)
        f.seek(item + 4 + 7 * n)
        f.write(struct.pack("<f", 999.0))
    am_crash_cluster.start()
    query = (
        "select _bm25query_policy_rows('am_docs_fts_idx', to_tsvector('simple', 'w3'), 1.2, 0.75)"
    )
    with connect(dsn) as conn:
        report = check(conn, "am_docs_fts_idx")
        assert not report["consistent"]
        assert "row (0,1): the row list gives length 999, its tf add up to 3" in report["problems"]
        conn.execute("set role am_row_list_tenant")
        assert conn.execute(query).fetchone()[0] is not None
    am_crash_cluster.stop()
    with open(am_crash_cluster.data / path, "r+b") as f:
        f.seek(item)
        f.write((n + 1).to_bytes(2, "little"))
    am_crash_cluster.start()
    with connect(dsn) as conn:
        report = check(conn, "am_docs_fts_idx")
        assert any("not a chunk of rows" in p for p in report["problems"]), report
        conn.execute("set role am_row_list_tenant")
        with pytest.raises(psycopg.errors.IndexCorrupted, match="malformed row-list chunk"):
            conn.execute(query)
        conn.execute("reset role")
        conn.execute("reindex index am_docs_fts_idx")
        assert check(conn, "am_docs_fts_idx")["consistent"]
        conn.execute("drop table am_docs")
        conn.execute("drop owned by am_row_list_tenant")
        conn.execute("drop role am_row_list_tenant")


@pytest.mark.parametrize(
    ("link", "name", "error"),
    [
        (lambda f: 0xFFFFFFFF, "cut_short", "posting list cut short"),
        (dir_head, "to_dir", "links to a page outside its segment"),
    ],
    ids=["cut short", "to a directory page"],
)
def test_a_damaged_posting_page_link_is_reported_and_the_index_not_extended(
    am_crash_cluster, layout, model_dir, link, name, error
):
    """A posting page whose link ends its chain (InvalidBlockNumber, PostgreSQL's P_NEW)
    while its list has blocks left, or leads to a page of another kind: the scan, which
    pins a list's next page ahead, raises index corruption, instead of asking the buffer
    manager for P_NEW (which would extend the index by a page) or retrying as after a
    concurrent merge until it reports "merged too often"."""
    dsn = create_database(am_crash_cluster, layout, model_dir, "am_link_" + name)
    with connect(dsn) as conn:
        path = create_long_list_index(conn)
        size = conn.execute("select pg_relation_size('am_items_v_idx')").fetchone()[0]
        conn.execute("checkpoint")
    am_crash_cluster.stop()
    with open(am_crash_cluster.data / path, "r+b") as f:
        f.seek(term_0_entry_at(f) + 12)  # SparseDirEntry.firstBlk
        first = int.from_bytes(f.read(4), "little")
        f.seek(first * 8192 + 8192 - 16 + 4)  # the page's next link
        assert int.from_bytes(f.read(4), "little") not in (0, 0xFFFFFFFF)
        target = link(f)
        f.seek(first * 8192 + 8192 - 16 + 4)
        f.write(target.to_bytes(4, "little"))
    am_crash_cluster.start()
    with connect(dsn) as conn:
        conn.execute("set enable_seqscan = off")
        conn.execute("set hybrid_search.sparse_skip_lists = off")
        with pytest.raises(psycopg.errors.IndexCorrupted, match=error):
            conn.execute("select id from am_items order by v <#> '{1:0.1,5:3}/3000' limit 5")
        after = conn.execute("select pg_relation_size('am_items_v_idx')").fetchone()[0]
        assert after == size
