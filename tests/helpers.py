"""Helpers shared by the tests."""

import math
import signal
import subprocess
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
