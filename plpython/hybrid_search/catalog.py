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
