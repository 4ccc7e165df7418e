"""Helpers shared by the tests."""

import contextlib
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from hybrid_search_installer import database
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout
from pgvector.psycopg import register_vector


def connect(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    register_vector(conn)
    return conn


def create_database(cluster: Cluster, layout: Layout, model_dir: Path | None, name: str) -> str:
    """A fresh database with the extension pointed at our venv (and model, if given)."""
    database.recreate_database(cluster.dsn("postgres"), name)
    dsn = cluster.dsn(name)
    database.ensure_extension(dsn, layout, str(model_dir) if model_dir else None)
    return dsn


def own_cluster(directory: Path, port: int):
    """A server of the test's own (a fixture's generator): initialised and started,
    destroyed when the fixture ends."""
    cluster = Cluster(directory, port=port)
    cluster.init()
    cluster.start()
    yield cluster
    cluster.destroy()


def own_primary_and_standby(directory: Path, port: int):
    """A primary of the test's own on port and a streaming hot standby of it on
    port + 1 (a fixture's generator), destroyed when the fixture ends."""
    primary = Cluster(directory / "primary", port=port)
    standby = Cluster(directory / "standby", port=port + 1)
    try:
        primary.init()
        primary.start()
        standby.init_standby(primary)
        standby.start()
        yield primary, standby
    finally:
        standby.destroy()
        primary.destroy()


def model_calls(conn) -> int:
    """Model calls this connection's backend has made so far."""
    return conn.execute("select encode_calls from hybrid_search_model_stats()").fetchone()[0]


def insert(conn, *contents: str, metadata: dict | None = None) -> list[int]:
    """Insert documents in one statement; returns their ids in order."""
    import json

    rows = conn.execute(
        "insert into documents (content, metadata)"
        " select c, %s::jsonb from unnest(%s::text[]) with ordinality as t (c, o)"
        " order by o returning id",
        [json.dumps(metadata or {}), list(contents)],
    ).fetchall()
    return [r[0] for r in rows]


def parse_sparse(text: str) -> dict[int, float]:
    """{token_id: weight} from sparsevec text output (index = token id + 1)."""
    body = text.partition("/")[0].strip("{}")
    if not body:
        return {}
    return {int(i) - 1: float(w) for i, w in (entry.split(":") for entry in body.split(","))}


def popen_interruptible(args: list, **kwargs) -> subprocess.Popen:
    """A command that takes SIGINT as Ctrl-C even when the tests run with SIGINT ignored
    (as a background job or under nohup do, and their children inherit)."""
    return subprocess.Popen(
        args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs
    )


def terms(conn) -> dict[int, dict[str, int]]:
    """{doc id: {lexeme: positions}} as stored in documents.fts."""
    out: dict[int, dict[str, int]] = {}
    for doc_id, lexeme, tf in conn.execute(
        "select d.id, u.lexeme, coalesce(cardinality(u.positions), 1)"
        " from documents d, unnest(d.fts) u"
    ):
        out.setdefault(doc_id, {})[lexeme] = tf
    for (doc_id,) in conn.execute("select id from documents"):
        out.setdefault(doc_id, {})
    return out


def bm25(conn, query, k1=1.2, b=0.75, stats_from=None):
    """Okapi BM25 (Lucene idf) of every document; statistics from stats_from or the corpus."""
    docs = terms(conn)
    basis = stats_from or docs
    n = len(basis)
    avgdl = sum(sum(t.values()) for t in basis.values()) / n
    q = {}
    for lexeme, count in conn.execute(
        "select lexeme, cardinality(positions) from unnest(to_tsvector('english', %s))", [query]
    ):
        q[lexeme] = count
    scores = {}
    for doc_id, tfs in docs.items():
        dl = sum(tfs.values())
        s = 0.0
        for lexeme, qtf in q.items():
            if lexeme in tfs:
                df = sum(1 for t in basis.values() if lexeme in t)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                tf = tfs[lexeme]
                s += qtf * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        if s > 0:
            scores[doc_id] = s
    return sorted(scores.items(), key=lambda t: (-t[1], t[0]))


def read_while_writing(
    dsn: str,
    table: str,
    write_rows: Callable[[psycopg.Connection, object, int], int],
    read: Callable[[psycopg.Connection], int],
    seconds: float = 20,
) -> None:
    """A sparse_inverted index under a concurrent writer: one connection writes rows
    (write_rows(conn, rng, first id) -> next id), deletes every 13th and vacuums now
    and then, merging the pending list every 16 rows, while another, without
    sequential scans, calls read(conn) -> comparisons made, for `seconds`."""
    import numpy as np

    stop = threading.Event()
    errors = []

    def write():
        try:
            with connect(dsn) as w:
                w.execute("set hybrid_search.sparse_pending_limit = 16")
                rng = np.random.default_rng(5)
                i = 10000
                while not stop.is_set():
                    i = write_rows(w, rng, i)
                    w.execute(f"delete from {table} where id %% 13 = %s", [i % 13])
                    w.execute(f"vacuum {table}") if i % 200 == 0 else None
        except Exception as e:  # reported by the caller
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + seconds
        with connect(dsn) as r:
            r.execute("set enable_seqscan = off")
            n = 0
            while time.monotonic() < deadline:
                n += read(r)
            assert n > 10
    finally:
        stop.set()
        writer.join()
    assert not errors, errors


@contextlib.contextmanager
def notices(conn):
    """The primary messages of the notices conn receives in the block. The handler goes
    with the block: the connection is shared, and a later test's notices are not these."""
    lines = []

    def collect(diagnostic):
        lines.append(diagnostic.message_primary)

    conn.add_notice_handler(collect)
    try:
        yield lines
    finally:
        conn.remove_notice_handler(collect)


@contextlib.contextmanager
def nested_plans(conn, *settings):
    """The plans of the statements run in the block and of those they run in turn
    (auto_explain), under these (setting, value) pairs too."""
    settings = [
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("client_min_messages", "log"),
        *settings,
    ]
    with notices(conn) as plans:
        conn.execute("load 'auto_explain'")
        for setting, value in settings:
            conn.execute("select set_config(%s, %s, false)", [setting, value])
        try:
            yield plans
        finally:
            for setting, _ in settings:
                conn.execute(f"reset {setting}")


@contextlib.contextmanager
def tenant_policy(conn: psycopg.Connection, tenants):
    """The README's tenant policy on documents (a row is its metadata's tenant's, by
    role name) and a writer role per tenant, granted with hybrid_search_grant;
    all taken back afterwards."""
    conn.execute("alter table documents enable row level security")
    conn.execute(
        "create policy tenant_rows on documents"
        " using (metadata->>'tenant' = current_user)"
        " with check (metadata->>'tenant' = current_user)"
    )
    for tenant in tenants:
        conn.execute(f"drop role if exists {tenant}")
        conn.execute(f"create role {tenant}")
        conn.execute("select hybrid_search_grant(%s, 'write')", [tenant])
    try:
        yield conn
    finally:
        conn.execute("reset role")
        conn.execute("drop policy tenant_rows on documents")
        conn.execute("alter table documents disable row level security")
        for tenant in tenants:
            conn.execute(f"drop owned by {tenant}")
            conn.execute(f"drop role {tenant}")


# a sparse_inverted scan's settings that change how it works, never what it returns
SCAN_SETTINGS = [
    ("hybrid_search.sparse_simd", ("on", "off")),
    ("hybrid_search.sparse_skip_lists", ("on", "off", "auto")),
    ("hybrid_search.sparse_window_slots", ("65536", "100", "7", "1")),
]


def assert_setting_agrees(conn, setting, values, queries, ks, cases, found, exact) -> None:
    """For each query, k and (where, visible) case: found(query, k, where) is the
    same under every value of the sparse_inverted scan's setting (one that must
    not change a row or a score, such as hybrid_search.sparse_simd, which picks
    the AVX-512 or the scalar loops), and exact(query, k, where, visible) holds
    under each."""
    known = conn.execute("select count(*) from pg_settings where name = %s", [setting])
    known = known.fetchone()[0]
    assert known == 1, f"{setting} is not a setting of the loaded library"
    try:
        for query in queries:
            for k in ks:
                for where, visible in cases:
                    rows = {}
                    for value in values:
                        conn.execute(f"set {setting} = {value}")
                        rows[value] = found(query, k, where)
                        exact(query, k, where, visible)
                    assert all(r == rows[values[0]] for r in rows.values()), setting
    finally:
        conn.execute(f"reset {setting}")


def toast_blocks_read(conn, table):
    """The TOAST blocks table's queries have read so far (hit or not), flushed from
    this backend's pending statistics first."""
    conn.execute("select pg_stat_force_next_flush()")  # flushed when it goes idle
    return conn.execute(
        "select pg_stat_clear_snapshot(),"
        " (select toast_blks_hit + toast_blks_read from pg_statio_user_tables where relname = %s)",
        [table],
    ).fetchone()[1]


def kill_midway(dsn: str, query_start: str, statement: Callable, seconds: float = 3.0) -> None:
    """Run statement(connection), one that does not end on its own (a COPY of endless
    rows), in a thread; find its backend by the start of its query, kill it with SIGKILL
    seconds later, and wait for the thread (which sees the connection break)."""

    def run():
        try:
            with connect(dsn) as c:
                statement(c)
        except psycopg.Error:
            pass  # killed

    with connect(dsn) as watcher:
        t = threading.Thread(target=run)
        t.start()
        pid = None
        for _ in range(200):
            row = watcher.execute(
                "select pid from pg_stat_activity where query like %s and pid <> pg_backend_pid()",
                [query_start + "%"],
            ).fetchone()
            if row:
                pid = row[0]
                break
            time.sleep(0.05)
        assert pid, f"no backend ran {query_start!r}"
        time.sleep(seconds)
        os.kill(pid, signal.SIGKILL)
        t.join()
