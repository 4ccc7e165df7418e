"""BM25 on the sparse_inverted access method (extension/sparse_bm25.c): ORDER BY
fts <&> to_bm25query(...) through the index equals a BM25 computed here from the
rows' lexemes with the statistics the query carries, and those statistics are the
index's rows (dead ones until VACUUM), for k up to 1,000, under inserts, updates,
deletes, VACUUM, concurrent writers, a WHERE filter and row-level security."""

import json
import math
import re
import time

import numpy as np
import psycopg
import pytest
from helpers import SCAN_SETTINGS, assert_setting_agrees, notices, read_while_writing

KS = [1, 10, 100, 1000]
VOCABULARY = 400


def random_texts(rng, n):
    """Zipf-drawn words (repeats give tf > 1), a few empty texts and NULLs."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.01:
            out.append(None)
        elif r < 0.02:
            out.append("")
        else:
            words = np.minimum(rng.zipf(1.3, int(rng.integers(1, 40))), VOCABULARY)
            out.append(" ".join(f"w{w}" for w in words))
    return out


def lexemes(text):
    """{lexeme: tf} as to_tsvector('simple', text) stores it (no stop words there)."""
    if text is None:
        return None
    out: dict[str, int] = {}
    for word in text.split():
        out[word] = out.get(word, 0) + 1
    return out


def brute_force(rows, q):
    """id -> BM25 of every non-null row with the query's statistics."""
    k1, b, avgdl = q["k1"], q["b"], q["avgdl"]
    scores = {}
    for i, tfs in rows.items():
        if tfs is None:
            continue
        length = sum(tfs.values())
        s = 0.0
        for t in q["terms"]:
            tf = tfs.get(t["lexeme"])
            if tf:
                norm = 1 - b + b * length / avgdl if avgdl > 0 else 1.0
                s += t["weight"] * tf * (k1 + 1) / (tf + k1 * norm)
        scores[i] = s
    return scores


def expected_statistics(versions, query):
    """N, average length and df over the row versions the index holds."""
    held = [v for v in versions if v is not None]
    n = len(held)
    total = sum(sum(v.values()) for v in held)
    dfs = {w: sum(1 for v in held if w in v) for w in set(query.split())}
    return n, (total / n if n else 0.0), dfs


INDEX_QUERY = "to_bm25query('am_docs_fts_idx', %(q)s, 'simple')"


def bm25query(conn, query, expression=INDEX_QUERY, params=None):
    row = conn.execute(f"select ({expression})::text", {"q": query, **(params or {})}).fetchone()
    return json.loads(row[0])


def by_index(conn, query, k, where="true", expression=INDEX_QUERY, params=None):
    q = f"(select {expression})"
    sql = (
        f"select id, fts <&> {q} from am_docs where {where} and fts <&> {q} < 0"
        f" order by fts <&> {q} limit %(k)s"
    )
    args = {"q": query, "k": k, **(params or {})}
    plan = "\n".join(r[0] for r in conn.execute("explain (costs off) " + sql, args))
    assert "am_docs_fts_idx" in plan, plan
    return conn.execute(sql, args).fetchall()


def assert_exact(
    conn, rows, query, k, where="true", visible=None, expression=INDEX_QUERY, params=None
):
    """The index's top k: each score the brute force's to 1e-9, in order, and no
    row left out scores higher than the k-th."""
    q = bm25query(conn, query, expression, params)
    found = by_index(conn, query, k, where, expression, params)
    candidates = rows if visible is None else {i: rows[i] for i in visible if i in rows}
    scores = {i: s for i, s in brute_force(candidates, q).items() if s > 0}
    ids = [i for i, _ in found]
    assert len(set(ids)) == len(ids)
    assert len(found) == min(k, len(scores))
    for i, d in found:
        assert -d == pytest.approx(scores[i], rel=1e-9)
    distances = [d for _, d in found]
    assert distances == sorted(distances)
    if found:
        kth = -found[-1][1]
        missing = [i for i, s in scores.items() if i not in set(ids) and s > kth * (1 + 1e-9)]
        assert not missing
    return q


@pytest.fixture
def docs(db):
    """A table of random texts with a BM25 sparse_inverted index, and its rows."""
    rng = np.random.default_rng(25)
    texts = random_texts(rng, 3000)
    db.execute("drop table if exists am_docs")
    # no autovacuum: a VACUUM merges the pending list the tests count (the fixture's
    # UPDATE can reach the statistics after its VACUUM, and trigger one)
    db.execute(
        "create table am_docs (id int primary key, tenant int, body text, fts tsvector)"
        " with (autovacuum_enabled = false)"
    )
    with db.cursor().copy("copy am_docs (id, tenant, body) from stdin") as copy:
        for i, t in enumerate(texts):
            copy.write_row((i, i % 10, t))
    db.execute("update am_docs set fts = to_tsvector('simple', body)")
    db.execute("vacuum am_docs")
    db.execute("create index am_docs_fts_idx on am_docs using sparse_inverted (fts)")
    db.execute("analyze am_docs")
    db.execute("set enable_seqscan = off")
    rows = {i: lexemes(t) for i, t in enumerate(texts)}
    yield db, rows, rng
    db.execute("reset role")
    db.execute("reset enable_seqscan")
    db.execute("drop table if exists am_docs")


def check(conn):
    report = conn.execute("select sparse_inverted_check('am_docs_fts_idx')").fetchone()[0]
    return json.loads(report) if isinstance(report, str) else report


def queries(rng, n=6):
    return [
        " ".join(f"w{w}" for w in np.minimum(rng.zipf(1.3, 1 + j % 5), VOCABULARY))
        for j in range(n)
    ]


def assert_statistics(conn, versions, query):
    q = bm25query(conn, query)
    n, avgdl, dfs = expected_statistics(versions, query)
    assert q["documents"] == n
    assert q["avgdl"] == pytest.approx(avgdl, rel=1e-12)
    for t in q["terms"]:
        assert t["df"] == dfs[t["lexeme"]]
        df = dfs[t["lexeme"]]
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        assert t["weight"] == pytest.approx(idf * query.split().count(t["lexeme"]), rel=1e-12)
    report = check(conn)
    assert report["consistent"], report
    assert report["documents"] == n


def test_exact_for_every_k(docs):
    conn, rows, rng = docs
    for query in queries(rng):
        assert_statistics(conn, list(rows.values()), query)
        for k in KS:
            assert_exact(conn, rows, query, k)


def test_exact_under_writes_and_vacuum(docs):
    conn, rows, rng = docs
    conn.execute("set hybrid_search.sparse_pending_limit = 100000")  # keep rows pending
    versions = list(rows.values())  # every version the index holds
    for j, t in enumerate(random_texts(rng, 300)):
        i = 3000 + j
        conn.execute(
            "insert into am_docs (id, tenant, fts) values (%s, %s, to_tsvector('simple', %s))",
            [i, i % 10, t],
        )
        rows[i] = lexemes(t)
        versions.append(rows[i])
    for i in rng.choice(3000, 200, replace=False).tolist():
        t = random_texts(rng, 1)[0]
        conn.execute("update am_docs set fts = to_tsvector('simple', %s) where id = %s", [t, i])
        rows[i] = lexemes(t)
        versions.append(rows[i])
    for i in rng.choice(3300, 200, replace=False).tolist():
        conn.execute("delete from am_docs where id = %s", [i])
        rows.pop(i, None)
    conn.execute("reset hybrid_search.sparse_pending_limit")
    qs = queries(rng, 4)
    # dead rows count until VACUUM
    for query in qs:
        assert_statistics(conn, versions, query)
        for k in KS:
            assert_exact(conn, rows, query, k)
    assert check(conn)["pending_rows"] > 0
    conn.execute("vacuum am_docs")
    report = check(conn)
    assert report["pending_rows"] == 0 and report["rows_not_visible"] == 0
    for query in qs:
        assert_statistics(conn, list(rows.values()), query)
        for k in KS:
            assert_exact(conn, rows, query, k)


def test_merges_of_appended_rows_are_exact(docs):
    """Rows appended in TID order and merged every ~200 inserts: a merge copies the
    old blocks no new row goes into as they are (sparse_build.c), their row lengths
    (the blocks' smallest, BM25's bound) with them; scores and statistics stay exact."""
    conn, rows, rng = docs
    conn.execute("set hybrid_search.sparse_pending_limit = 16")  # 1/16 of the rows rules
    generation = check(conn)["generation"]
    for start in range(3000, 4500, 100):
        with conn.cursor().copy("copy am_docs (id, tenant, body) from stdin") as copy:
            for i, t in enumerate(random_texts(rng, 100), start):
                copy.write_row((i, i % 10, t))
                rows[i] = lexemes(t)
        conn.execute(
            "update am_docs set fts = to_tsvector('simple', body) where id >= %s and fts is null",
            [start],
        )
    conn.execute("vacuum am_docs")  # the updates' dead versions: one merge more
    report = check(conn)
    assert report["consistent"] and report["pending_rows"] == 0, report
    assert report["generation"] > generation + 4, report  # merges
    for query in queries(rng, 4):
        assert_statistics(conn, list(rows.values()), query)
        for k in KS:
            assert_exact(conn, rows, query, k)


@pytest.mark.parametrize(("setting", "values"), SCAN_SETTINGS)
def test_scan_settings_keep_rows_and_scores(docs, setting, values):
    """With hybrid_search.sparse_simd off a scan runs the scalar loops that a CPU
    without AVX-512 runs; with a small hybrid_search.sparse_window_slots it fills
    its sums in many windows, which cut through posting blocks. Either way: the
    same rows and scores, at every k and under a filter; and all exact."""
    conn, rows, rng = docs
    tenant3 = {i for i in rows if i % 10 == 3}
    assert_setting_agrees(
        conn, setting, values, queries(rng), KS, [("true", None), ("tenant = 3", tenant3)],
        lambda query, k, where: by_index(conn, query, k, where),
        lambda query, k, where, visible: assert_exact(conn, rows, query, k, where, visible),
    )  # fmt: skip


def common_and_rare_queries(rows):
    """The commonest word beside each of three rare ones, and beside two of them."""
    df = {w: sum(1 for r in rows.values() if r and f"w{w}" in r) for w in range(1, VOCABULARY + 1)}
    common = max(df, key=df.get)
    rare = [w for w in df if 3 <= df[w] <= 30][:3]
    assert df[common] > 1000 and len(rare) == 3
    return [f"w{common} w{r}" for r in rare] + [f"w{common} w{rare[0]} w{rare[1]}"]


def assert_exact_with_small_batches(conn, rows, queries_, visible):
    """Exact at every k with first batches of 3 rows (many batches), filtered too,
    then with 200 more rows pending."""
    rng = np.random.default_rng(26)
    conn.execute("set hybrid_search.sparse_batch_size = 3")
    try:
        for query in queries_:
            for k in KS:
                assert_exact(conn, rows, query, k)
            for k in [10, 100]:
                assert_exact(conn, rows, query, k, where="tenant = 3", visible=visible)
        conn.execute("set hybrid_search.sparse_pending_limit = 100000")  # keep rows pending
        top = conn.execute("select max(id) from am_docs").fetchone()[0]
        for j, t in enumerate(random_texts(rng, 200)):
            i = top + 1 + j
            conn.execute(
                "insert into am_docs values (%s, %s, %s, to_tsvector('simple', %s))",
                [i, i % 10, t, t],
            )
            rows[i] = lexemes(t)
        for k in KS:
            assert_exact(conn, rows, queries_[0], k)
    finally:
        conn.execute("reset hybrid_search.sparse_batch_size")
        conn.execute("reset hybrid_search.sparse_pending_limit")


def test_exact_for_rare_words_beside_a_common_one(docs):
    """Rare words beside the commonest one, ranked from every row's sum at once
    (rank_all): the rare words' rows fill a first batch of 3, the common word's list
    left out of it and looked up, through its skip array, at those rows only (a
    DEBUG1 line says so), and the next batches come from the same sums with it
    added; exact at every k, under a filter, with pending rows."""
    conn, rows, _ = docs
    tenant3 = {i for i in rows if i % 10 == 3}
    conn.execute("set client_min_messages = debug1")
    conn.execute("set hybrid_search.sparse_skip_lists = on")
    try:
        with notices(conn) as lines:
            assert_exact_with_small_batches(conn, rows, common_and_rare_queries(rows), tenant3)
    finally:
        conn.execute("reset client_min_messages")
        conn.execute("reset hybrid_search.sparse_skip_lists")
    assert any("1 of 2 query terms' lists looked up at" in m for m in lines), lines


def test_maxscore_when_the_heap_is_sparser_than_its_indexed_rows(docs):
    """The same texts one row in 66 of a heap of 198,000 rows, under a partial
    index: the heap positions outnumber the indexed rows more than 4 to 1, so the
    scan ranks batch by batch with MaxScore instead of every row at once. The rare
    words' rows fill a batch, so the common word's list cannot bring a row in alone
    and MaxScore probes it only at their rows, passing over most of its blocks (and
    pages) unread; exact at every k, under a filter, with pending rows."""
    conn, rows, _ = docs
    queries_ = common_and_rare_queries(rows)
    conn.execute("create temp table am_texts as select * from am_docs")
    conn.execute("drop index am_docs_fts_idx")
    conn.execute("truncate am_docs")
    conn.execute(
        "insert into am_docs select g, coalesce(t.tenant, -1), t.body, t.fts"
        " from generate_series(0, 66 * 3000 - 1) as g left join am_texts as t on t.id * 66 = g"
        " order by g"
    )
    conn.execute("drop table am_texts")
    conn.execute(
        "create index am_docs_fts_idx on am_docs using sparse_inverted (fts) where fts is not null"
    )
    conn.execute("analyze am_docs")
    spread = {i * 66: v for i, v in rows.items()}
    blocks, offsets, indexed = conn.execute(
        "select max((ctid::text::point)[0]) + 1, max((ctid::text::point)[1]), count(*)"
        " from am_docs where fts is not null"
    ).fetchone()
    assert blocks * offsets > 4 * indexed + 65536
    tenant3 = {i for i in spread if i // 66 % 10 == 3}
    assert_exact_with_small_batches(conn, spread, queries_, tenant3)
    assert check(conn)["consistent"]


def test_filter_returns_k_rows_whenever_k_match(docs):
    conn, rows, rng = docs
    tenant3 = {i for i in rows if i % 10 == 3}
    conn.execute("set hybrid_search.sparse_batch_size = 10")  # many batches
    for query in queries(rng, 4):
        for k in [10, 100, 300]:
            assert_exact(conn, rows, query, k, where="tenant = 3", visible=tenant3)


def test_a_metadata_filter_column_ranks_only_the_rows_gin_finds(docs):
    """(fts, metadata jsonb_filter_ops): metadata @> x is the scan's condition, the
    GIN index on metadata finds its rows, and the top k stays exact."""
    conn, rows, rng = docs
    conn.execute("alter table am_docs add column metadata jsonb")
    conn.execute(
        "update am_docs set metadata = jsonb_build_object('tenant', tenant, 'even', id % 2 = 0)"
    )
    conn.execute("vacuum am_docs")
    conn.execute("drop index am_docs_fts_idx")
    conn.execute("create index am_docs_fts_idx on am_docs using sparse_inverted (fts, metadata)")
    conn.execute("create index am_docs_metadata_idx on am_docs using gin (metadata jsonb_path_ops)")
    conn.execute("set enable_bitmapscan = off")
    conn.execute("set enable_sort = off")
    conn.execute("set hybrid_search.sparse_batch_size = 10")
    try:
        for where, visible in [
            ("""metadata @> '{"tenant": 3}'""", {i for i in rows if i % 10 == 3}),
            ("""metadata @> '{"tenant": 3, "even": true}'""", set()),
            (
                """metadata @> '{"tenant": 4}' and metadata @> '{"even": true}'""",
                {i for i in rows if i % 10 == 4},
            ),
        ]:
            sql = (
                "explain (analyze, costs off, timing off, summary off) select id from am_docs"
                f" where {where}"
                " order by fts <&> to_bm25query('am_docs_fts_idx', 'w1 w2', 'simple') limit 1000"
            )
            plan = "\n".join(r[0] for r in conn.execute(sql))
            assert re.search(r"Index Cond: \(+metadata @>", plan), plan
            # three batches (10, 40 and 160 rows) unfiltered, then GIN's rows only
            removed = re.search(r"Rows Removed by Index Recheck: (\d+)", plan)
            assert removed is None or int(removed.group(1)) <= 210, plan
            for query in queries(rng, 3):
                for k in [10, 100, 1000]:
                    assert_exact(conn, rows, query, k, where=where, visible=visible)
        # a GIN scan under gin_fuzzy_search_limit returns a sample: not narrowed by it
        conn.execute("set gin_fuzzy_search_limit = 1")
        conn.execute("set hybrid_search.sparse_filter_after = 0")
        for query in queries(rng, 2):
            assert_exact(conn, rows, query, 100, where=where, visible=visible)
    finally:
        conn.execute("reset gin_fuzzy_search_limit")
        conn.execute("reset hybrid_search.sparse_filter_after")
        conn.execute("reset enable_bitmapscan")
        conn.execute("reset enable_sort")


VISIBLE_QUERY = (
    "_bm25query_statistics(to_tsvector('simple', %(q)s), 1.2, 0.75, %(n)s, %(total)s,"
    " %(lexemes)s, %(dfs)s)"
)


def test_row_level_security_returns_k_visible_rows(docs):
    """A role under row-level security may not read the index's statistics (they
    count every row); with the statistics of the rows it sees, the scan gives it k
    visible rows in exact order."""
    conn, rows, rng = docs
    conn.execute("alter table am_docs enable row level security")
    conn.execute("create policy tenant3 on am_docs using (tenant = 3)")
    conn.execute("drop role if exists am_bm25_reader")
    conn.execute("create role am_bm25_reader")
    conn.execute("grant select on am_docs to am_bm25_reader")
    functions = "to_bm25query, _bm25query, _bm25query_statistics, bm25_distance, bm25query_out"
    conn.execute(f"grant execute on function {functions} to am_bm25_reader")
    try:
        conn.execute("set role am_bm25_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            bm25query(conn, "w1")
        tenant3 = {i for i in rows if i % 10 == 3}
        visible = [rows[i] for i in tenant3]
        for query in queries(rng, 3):
            n, avgdl, dfs = expected_statistics(visible, query)
            params = {
                "n": n,
                "total": avgdl * n,
                "lexemes": list(dfs),
                "dfs": list(dfs.values()),
            }
            for k in [10, 100, 1000]:
                q = assert_exact(
                    conn, rows, query, k, visible=tenant3, expression=VISIBLE_QUERY, params=params
                )
            assert q["documents"] == n
    finally:
        conn.execute("reset role")
        conn.execute("drop policy tenant3 on am_docs")
        conn.execute("alter table am_docs disable row level security")
        conn.execute("revoke all on am_docs from am_bm25_reader")
        conn.execute(f"revoke all on function {functions} from am_bm25_reader")
        conn.execute("drop role am_bm25_reader")


def index_query(index):
    """The bm25query expression of index's statistics (k1 1.2, b 0.75)."""
    return f"_bm25query('{index}', to_tsvector('simple', %(q)s), 1.2, 0.75)"


def statistics_of(conn, index, query):
    """The documents and df _bm25query gives the current role from index."""
    q = bm25query(conn, query, index_query(index))
    return q["documents"], {t["lexeme"]: t["df"] for t in q["terms"]}


def test_a_partial_index_of_exactly_the_roles_policies_gives_it_its_statistics(docs):
    """Under row-level security a role may read the statistics of a partial index whose
    predicate is exactly its policies (the planner's prover, both ways, after the
    policies' constants are folded and their stable parts evaluated): they count its
    rows only, as an index counts them (deleted ones until VACUUM). Any other index is
    refused, and _bm25_policy_index finds the one that fits, or none."""
    conn, rows, rng = docs
    conn.execute("alter table am_docs enable row level security")
    conn.execute("drop role if exists am_bm25_tenant")
    conn.execute("create role am_bm25_tenant")
    conn.execute("create policy tenant3 on am_docs to am_bm25_tenant using (tenant = 3)")
    conn.execute("grant select, delete on am_docs to am_bm25_tenant")
    functions = "_bm25query, _bm25_policy_index, bm25_distance, bm25query_out"
    conn.execute(f"grant execute on function {functions} to am_bm25_tenant")
    # the right rows under another key (and the lowest OID): never what
    # _bm25_policy_index finds
    conn.execute("create index am_docs_body_t3 on am_docs using sparse_inverted"
                 " (to_tsvector('simple', body)) where tenant = 3")  # fmt: skip
    for name, predicate in [
        ("t3", "tenant = 3"),
        ("t34", "tenant in (3, 4)"),
        ("t3b", "tenant >= 3 and tenant <= 3"),
        ("body", "body is not null"),
    ]:
        conn.execute(
            f"create index am_docs_fts_idx_{name} on am_docs using sparse_inverted (fts)"
            f" where {predicate}"
        )

    def policy_index():
        row = conn.execute("select _bm25_policy_index('am_docs_fts_idx')::text").fetchone()
        return row[0]

    def refused(index):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            statistics_of(conn, index, "w1")

    try:
        assert policy_index() is None  # not under row-level security: the table's owner
        conn.execute("set role am_bm25_tenant")
        # t3 proves it both ways. The prover is conservative: it does not combine
        # t3b's two bounds into an equality
        assert policy_index() == "am_docs_fts_idx_t3"
        for index in ["am_docs_fts_idx", "am_docs_fts_idx_t34", "am_docs_fts_idx_t3b",
                      "am_docs_fts_idx_body"]:  # fmt: skip
            refused(index)
        tenant3 = {i for i in rows if i % 10 == 3}
        for query in queries(rng, 3):
            n, _, dfs = expected_statistics([rows[i] for i in tenant3], query)
            assert statistics_of(conn, "am_docs_fts_idx_t3", query) == (n, dfs)
            assert_exact(
                conn,
                rows,
                query,
                100,
                visible=tenant3,
                expression=index_query("am_docs_fts_idx_t3"),
            )
        # deleted rows count until VACUUM, as in every index's statistics
        gone = sorted(i for i in tenant3 if rows[i] is not None)[:5]
        conn.execute("delete from am_docs where id = any(%s)", [gone])
        held = len([i for i in tenant3 if rows[i] is not None])
        assert statistics_of(conn, "am_docs_fts_idx_t3", "w1")[0] == held
        # another backend's snapshot (an autovacuum worker's ANALYZE of another
        # table, under load) can keep one VACUUM from removing them: a few tries
        for _ in range(50):
            conn.execute("reset role")
            conn.execute("vacuum am_docs")
            conn.execute("set role am_bm25_tenant")
            if statistics_of(conn, "am_docs_fts_idx_t3", "w1")[0] != held:
                break
            time.sleep(0.2)
        assert statistics_of(conn, "am_docs_fts_idx_t3", "w1")[0] == held - len(gone)
        # the policy's constants are folded first, as the planner folds them
        conn.execute("reset role")
        conn.execute("alter policy tenant3 on am_docs using (tenant = 1 + 2)")
        conn.execute("set role am_bm25_tenant")
        assert policy_index() == "am_docs_fts_idx_t3"
        # a second permissive policy widens the rows to tenants 3 and 4: t34 fits
        conn.execute("reset role")
        conn.execute("create policy tenant4 on am_docs to am_bm25_tenant using (tenant = 4)")
        conn.execute("set role am_bm25_tenant")
        assert policy_index() == "am_docs_fts_idx_t34"
        refused("am_docs_fts_idx_t3")
        # a restrictive policy narrows them: nothing fits
        conn.execute("reset role")
        conn.execute("create policy odd on am_docs as restrictive to am_bm25_tenant"
                     " using (id % 2 = 1)")  # fmt: skip
        conn.execute("set role am_bm25_tenant")
        assert policy_index() is None
        refused("am_docs_fts_idx_t34")
        # a policy on a setting is proven with the setting's value at the call: the
        # role may change it (the policy trusts it), and then it is another tenant's
        conn.execute("reset role")
        conn.execute("drop policy odd on am_docs")
        conn.execute("drop policy tenant4 on am_docs")
        conn.execute("alter policy tenant3 on am_docs"
                     " using (tenant = current_setting('am.tenant')::int)")  # fmt: skip
        conn.execute("set role am_bm25_tenant")
        conn.execute("set am.tenant = '3'")
        assert policy_index() == "am_docs_fts_idx_t3"
        assert statistics_of(conn, "am_docs_fts_idx_t3", "w1")[0] == held - len(gone)
        conn.execute("set am.tenant = '4'")
        assert policy_index() is None
        refused("am_docs_fts_idx_t3")
        # a volatile function is never evaluated for the proof
        conn.execute("reset role")
        conn.execute("alter policy tenant3 on am_docs using (tenant = (random() * 0 + 3)::int)")
        conn.execute("set role am_bm25_tenant")
        assert policy_index() is None
        refused("am_docs_fts_idx_t3")
        # and a role no policy applies to sees no row: nothing fits either
        conn.execute("reset role")
        conn.execute("alter policy tenant3 on am_docs to current_user using (tenant = 3)")
        conn.execute("set role am_bm25_tenant")
        assert policy_index() is None
        refused("am_docs_fts_idx_t3")
    finally:
        conn.execute("reset role")
        conn.execute("reset am.tenant")
        for policy in ["tenant3", "tenant4", "odd"]:
            conn.execute(f"drop policy if exists {policy} on am_docs")
        conn.execute("alter table am_docs disable row level security")
        conn.execute("revoke all on am_docs from am_bm25_tenant")
        conn.execute(f"revoke all on function {functions} from am_bm25_tenant")
        conn.execute("drop role am_bm25_tenant")


POLICY_ROWS_QUERY = (
    "_bm25query_policy_rows('am_docs_fts_idx', to_tsvector('simple', %(q)s), 1.2, 0.75)"
)


def test_a_btree_on_the_policys_expression_gives_a_role_its_rows_statistics(docs):
    """Policies that come to one condition on an expression a btree indexes give a role
    under row-level security the statistics of its rows, counted in the BM25 index over
    the TIDs that btree finds (_bm25query_policy_rows): pending and merged rows alike,
    deleted ones until VACUUM, exact scores. Any other policy, index or role gets NULL
    (the caller then counts the visible rows)."""
    conn, rows, rng = docs
    conn.execute("alter table am_docs enable row level security")
    conn.execute("drop role if exists am_bm25_tenant")
    conn.execute("create role am_bm25_tenant")
    conn.execute("create policy tenant3 on am_docs to am_bm25_tenant using (tenant = 3)")
    conn.execute("grant select on am_docs to am_bm25_tenant")
    functions = "_bm25query_policy_rows, bm25_distance, bm25query_out"
    conn.execute(f"grant execute on function {functions} to am_bm25_tenant")

    def counted(query="w1 w2 w3"):
        """The role's statistics from _bm25query_policy_rows: (documents, total, dfs)."""
        conn.execute("set role am_bm25_tenant")
        try:
            row = conn.execute(f"select ({POLICY_ROWS_QUERY})::text", {"q": query}).fetchone()
        finally:
            conn.execute("reset role")
        if row[0] is None:
            return None
        q = json.loads(row[0])
        dfs = {t["lexeme"]: t["df"] for t in q["terms"]}
        return q["documents"], q["avgdl"] * q["documents"], dfs

    def expected(tenant, query="w1 w2 w3"):
        n, avgdl, dfs = expected_statistics([v for i, v in rows.items() if tenant(i)], query)
        return n, avgdl * n, dfs

    def assert_counted(tenant, query="w1 w2 w3"):
        n, total, dfs = counted(query)
        e_n, e_total, e_dfs = expected(tenant, query)
        assert (n, dfs) == (e_n, e_dfs)
        assert total == pytest.approx(e_total, rel=1e-12)

    tenants = {i: i % 10 for i in rows}
    try:
        assert counted() is None  # no index finds the policy's rows
        conn.execute("create index am_docs_tenant_idx on am_docs (tenant)")
        assert_counted(lambda i: tenants[i] == 3)
        # the same bm25query, weights to the bit, as the brute force's statistics give
        # (test_row_level_security_returns_k_visible_rows: those rank exactly)
        for query in queries(rng, 3):
            n, total, dfs = expected(lambda i: tenants[i] == 3, query)
            params = {"n": n, "total": total, "lexemes": list(dfs), "dfs": list(dfs.values())}
            brute = bm25query(conn, query, VISIBLE_QUERY, params)
            conn.execute("set role am_bm25_tenant")
            try:
                assert bm25query(conn, query, POLICY_ROWS_QUERY) == brute
            finally:
                conn.execute("reset role")
        # rows in the pending list count as merged ones do; other tenants' never
        for i, (tenant, text) in enumerate(
            [(3, "w1 w1 w2 w9"), (3, None), (3, "w3 w400"), (4, "w1 w2 w3 w3"), (3, "")]
        ):
            conn.execute(
                "insert into am_docs values (%s, %s, %s, to_tsvector('simple', %s))",
                [5000 + i, tenant, text, text],
            )
            rows[5000 + i] = lexemes(text)
            tenants[5000 + i] = tenant
        assert check(conn)["pending_rows"] > 0
        assert_counted(lambda i: tenants[i] == 3)
        # a deleted row counts until VACUUM, as in every index's statistics
        gone = sorted(i for i in rows if tenants[i] == 3 and rows[i])[:5]
        conn.execute("delete from am_docs where id = any(%s)", [gone])
        assert counted()[0] == expected(lambda i: tenants[i] == 3)[0]
        conn.execute("vacuum am_docs")
        for i in gone:
            del rows[i]
        assert_counted(lambda i: tenants[i] == 3)
        report = check(conn)
        assert report["consistent"], report
        # any operator of the btree's family, and a setting's value at the call
        conn.execute("alter policy tenant3 on am_docs using (tenant >= 8)")
        assert_counted(lambda i: tenants[i] >= 8)
        conn.execute("alter policy tenant3 on am_docs"
                     " using (current_setting('am.tenant')::int = tenant)")  # fmt: skip
        conn.execute("set am.tenant = '4'")
        assert_counted(lambda i: tenants[i] == 4)
        # what no btree answers exactly: NULL
        for using in [
            "tenant + 0 = 4",  # an expression not indexed
            "tenant = 4 or tenant = 5",
            "tenant = (random() * 0 + 4)::int",
            "tenant = (select 4)",
            "id = 4 and tenant = 4",
        ]:
            conn.execute(f"alter policy tenant3 on am_docs using ({using})")
            assert counted() is None, using
        conn.execute("alter policy tenant3 on am_docs using (tenant = 4)")
        conn.execute("create policy other on am_docs to am_bm25_tenant using (tenant = 5)")
        assert counted() is None  # two permissive policies: tenant = 4 or tenant = 5
        conn.execute("drop policy other on am_docs")
        # a hash index asks for a recheck, a partial btree holds some rows only
        conn.execute("drop index am_docs_tenant_idx")
        conn.execute("create index am_docs_tenant_hash on am_docs using hash (tenant)")
        conn.execute("create index am_docs_tenant_part on am_docs (tenant) where id > 100")
        assert counted() is None
        conn.execute("create index am_docs_tenant_idx on am_docs (tenant)")
        assert_counted(lambda i: tenants[i] == 4)
        # the TIDs must fit in work_mem (64 kB: 8,192 of them)
        conn.execute(
            "insert into am_docs select i, 4, 'w1', to_tsvector('simple', 'w1')"
            " from generate_series(10000, 18999) as i"
        )
        conn.execute("set work_mem = '64kB'")
        assert counted() is None
        conn.execute("reset work_mem")
        assert counted()[0] == expected(lambda i: tenants[i] == 4)[0] + 9000
        # not under row-level security (the owner), or a role no policy applies to
        assert conn.execute(f"select ({POLICY_ROWS_QUERY})::text", {"q": "w1"}).fetchone() == (
            None,
        )
        conn.execute("alter policy tenant3 on am_docs to current_user")
        assert counted() is None
    finally:
        conn.execute("reset role")
        conn.execute("reset am.tenant")
        for policy in ["tenant3", "other"]:
            conn.execute(f"drop policy if exists {policy} on am_docs")
        conn.execute("alter table am_docs disable row level security")
        conn.execute("revoke all on am_docs from am_bm25_tenant")
        conn.execute(f"revoke all on function {functions} from am_bm25_tenant")
        conn.execute("drop role am_bm25_tenant")


def test_a_lexeme_of_a_query_lexemes_hash_does_not_move_its_row_up(db):
    """The index keeps lexemes as 32-bit hashes, so a row with another lexeme of a
    query lexeme's hash (two such words are found here among 300,000, as anyone
    could) has that lexeme's tf in its key. The scan must still return rows in the
    order of their BM25 values: such a row, scoring 0, not first."""
    word, twin = db.execute(
        "select min(w), max(w) from"
        " (select 'x' || i as w from generate_series(1, 300000) as i) as t"
        " group by hashtext(w) having count(*) = 2 limit 1"
    ).fetchone()
    db.execute("drop table if exists am_docs")
    db.execute("create table am_docs (id int primary key, fts tsvector)")
    db.execute(
        "insert into am_docs select 0, to_tsvector('simple', repeat(%s || ' ', 20))"
        " union all select i, to_tsvector('simple', %s || repeat(' filler', i %% 5))"
        " from generate_series(1, 200) as i",
        [twin, word],
    )
    db.execute("create index am_docs_fts_idx on am_docs using sparse_inverted (fts)")
    sql = (
        "select id, fts <&> to_bm25query('am_docs_fts_idx', %s, 'simple') as d from am_docs"
        " order by d, id limit 5"
    )
    try:
        db.execute("set enable_seqscan = off")
        by_index = sql.replace(", id limit", " limit")
        plan = "\n".join(r[0] for r in db.execute("explain (costs off) " + by_index, [word]))
        assert "am_docs_fts_idx" in plan, plan
        found = db.execute(by_index, [word]).fetchall()
        db.execute("set enable_indexscan = off")
        db.execute("set enable_seqscan = on")
        expected = db.execute(sql, [word]).fetchall()
        assert [d for _, d in found] == [d for _, d in expected]
        assert expected[0][1] < 0 and 0 not in [i for i, _ in found]
    finally:
        db.execute("reset enable_seqscan")
        db.execute("reset enable_indexscan")
        db.execute("drop table am_docs")


def test_hostile_inputs(docs):
    conn, rows, _ = docs
    # stop words only, an empty query: no lexeme, every row scores 0
    for query in ["", "   "]:
        assert bm25query(conn, query)["terms"] == []
        assert by_index(conn, query, 10) == []
    assert conn.execute("select to_bm25query('am_docs_fts_idx', null)").fetchone()[0] is None
    # a huge query: 30,000 lexemes
    huge = " ".join(f"w{i}" for i in range(30000))
    assert_exact(conn, rows, huge, 100)
    # an index of another kind, not an index, and a table the role cannot read
    with pytest.raises(psycopg.Error, match="is not a sparse_inverted index over tsvector"):
        conn.execute("select to_bm25query('am_docs_pkey', 'w1')")
    with pytest.raises(psycopg.Error, match="is not an index"):
        conn.execute("select to_bm25query('am_docs', 'w1')")
    with pytest.raises(psycopg.Error, match="cannot be written as text"):
        conn.execute("select '{}'::bm25query")
    # a query made with another table's index: its statistics, still an exact ranking
    conn.execute("drop table if exists am_other")
    conn.execute("create table am_other (fts tsvector)")
    conn.execute(
        "insert into am_other select to_tsvector('simple', 'w1 w2 w2 w' || i)"
        " from generate_series(1, 50) i"
    )
    conn.execute("create index am_other_idx on am_other using sparse_inverted (fts)")
    other = "to_bm25query('am_other_idx', %(q)s, 'simple')"
    try:
        q = assert_exact(conn, rows, "w1 w2 w3", 100, expression=other)
        assert q["documents"] == 50
    finally:
        conn.execute("drop table am_other")
    conn.execute("drop role if exists am_bm25_stranger")
    conn.execute("create role am_bm25_stranger")
    conn.execute("grant execute on function to_bm25query, _bm25query to am_bm25_stranger")
    try:
        conn.execute("set role am_bm25_stranger")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("select to_bm25query('am_docs_fts_idx', 'w1')")
    finally:
        conn.execute("reset role")
        conn.execute("revoke all on function to_bm25query, _bm25query from am_bm25_stranger")
        conn.execute("drop role am_bm25_stranger")


BOTH_ORDERS = """
with q as materialized (select to_bm25query('am_docs_fts_idx', %(q)s, 'simple') as q)
select
    (select array_agg(s.d) from (
        select fts <&> q.q as d from am_docs where fts <&> q.q < 0
        order by fts <&> q.q limit %(k)s
    ) as s),
    (select array_agg(s.d) from (
        select bm25_distance(fts, q.q) as d from am_docs
        where bm25_distance(fts, q.q) < 0 order by 1 limit %(k)s
    ) as s)
from q
"""


def test_concurrent_writers_and_merges(docs, dsn):
    """A writer inserts, updates and deletes, merging the pending list often and
    vacuuming, while a reader ranks through the index and by scoring every row, in
    one statement: one bm25query, so one set of statistics, for both."""
    conn, _, rng = docs

    def write_rows(w, local, i):
        for t in random_texts(local, 20):
            w.execute(
                "insert into am_docs (id, tenant, fts) values (%s, 0, to_tsvector('simple', %s))",
                [i, t],
            )
            i += 1
        w.execute(
            "update am_docs set fts = to_tsvector('simple', %s) where id %% 17 = %s",
            [random_texts(local, 1)[0], i % 17],
        )
        return i

    def read(r):
        n = 0
        for query in queries(rng, 2):
            for k in [10, 1000]:
                found, expected = r.execute(BOTH_ORDERS, {"q": query, "k": k}).fetchone()
                assert found == expected
                n += 1
        return n

    plan = " ".join(r[0] for r in conn.execute("explain " + BOTH_ORDERS, {"q": "w1 w2", "k": 10}))
    assert "Index Scan using am_docs_fts_idx" in plan and "Seq Scan on am_docs" in plan, plan
    read_while_writing(dsn, "am_docs", write_rows, read)
    conn.execute("vacuum am_docs")
    report = check(conn)
    assert report["consistent"] and report["rows_not_visible"] == 0, report
