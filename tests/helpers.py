"""Helpers shared by the tests."""

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
