"""Where the extension and pgvector live, looked up once per backend.

Our functions run with search_path = pg_catalog, pg_temp, so every SQL
statement built here names its schemas. Both extensions are non-relocatable
once created; a DROP/CREATE in another schema within one session is the one
case the cache does not follow.
"""

_schemas: tuple[str, str] | None = None


def schemas(plpy) -> tuple[str, str]:
    """(our schema, pgvector's schema), quoted as identifiers."""
    global _schemas
    if _schemas is None:
        rows = plpy.execute(
            "select e.extname, pg_catalog.quote_ident(n.nspname) as schema"
            " from pg_catalog.pg_extension as e"
            " join pg_catalog.pg_namespace as n on n.oid = e.extnamespace"
            " where e.extname in ('hybrid_search', 'vector')"
        )
        found = {r["extname"]: r["schema"] for r in rows}
        _schemas = (found["hybrid_search"], found["vector"])
    return _schemas


_can_read_plan = None


def can_read(plpy, tables: list[str]) -> bool:
    """Whether the caller may SELECT from all of these tables of ours. Roles under
    row-level security are not granted the derived indexes (they hold every
    row's terms, see hybrid_search_grant): searches then scan documents, under
    the caller's policies."""
    global _can_read_plan
    if _can_read_plan is None:
        _can_read_plan = plpy.prepare(
            "select pg_catalog.bool_and(pg_catalog.has_table_privilege(t, 'select')) as ok"
            " from pg_catalog.unnest($1::text[]) as t",
            ["text[]"],
        )
    ours, _ = schemas(plpy)
    return bool(plpy.execute(_can_read_plan, [[f"{ours}.{t}" for t in tables]])[0]["ok"])
