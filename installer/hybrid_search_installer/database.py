"""A database with the extension created and pointed at our venv and model."""

import psycopg
from psycopg import sql

from . import report
from .layout import Layout


def ensure_database(admin_dsn: str, dbname: str) -> None:
    with psycopg.connect(admin_dsn, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", [dbname]).fetchone()
        if exists:
            report.done(f"database {dbname}")
            return
        report.changing(f"database {dbname}")
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))


def init_sql(layout: Layout, record: dict) -> str:
    """The statements ensure_extension would run, as a script for psql."""
    set_model = (
        sql.SQL("select hybrid_search_set_model(dense_model => {}, sparse_model => {});").format(
            sql.Literal(record["dense_model"]), sql.Literal(record["sparse_model"])
        )
        if record.get("dense_model")
        else sql.SQL("select hybrid_search_set_model({});").format(sql.Literal(record["model"]))
    )
    return "\n".join(
        [
            "-- To share the model stack among all backends (README: Preloading), add to",
            "-- postgresql.conf and restart the server:",
            "--   shared_preload_libraries = 'hybrid_search'  (next to any already listed)",
            f"--   hybrid_search.preload_venv = '{layout.venv}'",
            "create extension if not exists hybrid_search cascade;",
            "alter extension hybrid_search update;",
            sql.SQL("select hybrid_search_configure(python_venv => {});")
            .format(sql.Literal(str(layout.venv)))
            .as_string(None),
            set_model.as_string(None),
        ]
    )


def recreate_database(admin_dsn: str, dbname: str) -> None:
    """An empty database of that name (tests and benchmarks start from scratch)."""
    with psycopg.connect(admin_dsn, dbname="postgres", autocommit=True) as conn:
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(name))
        conn.execute(sql.SQL("create database {}").format(name))


def ensure_extension(
    dsn: str,
    layout: Layout,
    model: str | None,
    dense_model: str | None = None,
    sparse_model: str | None = None,
) -> None:
    """CREATE EXTENSION hybrid_search CASCADE, our venv, and the model (each only if needed;
    no model given: leave the default). dense_model and sparse_model set the legs apart."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        installed, available = conn.execute(
            "select installed_version, default_version from pg_available_extensions"
            " where name = 'hybrid_search'"
        ).fetchone()
        if installed == available:
            report.done(f"extension hybrid_search {installed}")
        elif installed:
            # new extension files over an older database: bring it up to them, keeping the data
            report.changing(f"extension hybrid_search {installed} -> {available} (ALTER EXTENSION)")
            conn.execute("alter extension hybrid_search update")
        else:
            report.changing("extension hybrid_search (CREATE EXTENSION ... CASCADE)")
            conn.execute("create extension hybrid_search cascade")

        venv = conn.execute("select python_venv from hybrid_search_settings").fetchone()[0]
        if venv != str(layout.venv):
            report.changing(f"python_venv = {layout.venv}")
            conn.execute("select hybrid_search_configure(python_venv => %s)", [str(layout.venv)])

        if dense_model or sparse_model:
            configured = conn.execute(
                "select dense_model, sparse_model from hybrid_search_settings"
            ).fetchone()
            if configured == (dense_model, sparse_model):
                report.done(f"models dense {dense_model}, sparse {sparse_model}")
            else:
                report.changing(f"models dense {dense_model}, sparse {sparse_model}")
                conn.execute(
                    "select hybrid_search_set_model(dense_model => %s, sparse_model => %s,"
                    " reembed => true)",
                    [dense_model, sparse_model],
                )
            return
        if model is None:
            return
        configured, sized = conn.execute(
            "select s.model, a.atttypmod > 0 from hybrid_search_settings as s,"
            " pg_attribute as a where a.attrelid = 'documents'::regclass and a.attname = 'dense'"
        ).fetchone()
        if configured == model and sized:
            report.done(f"model {model}")
        else:
            report.changing(f"model {model} (hybrid_search_set_model)")
            conn.execute("select hybrid_search_set_model(%s, reembed => true)", [model])
