-------------------------------------------------------------------------------
-- hybrid_search_check
-- Verifies that everything derived from documents agrees with it: every row
-- embedded by the configured model (or queued, or in hybrid_search_errors: a
-- row that is none of these would never be embedded), fts =
-- to_tsvector(content), the dense
-- index valid, both sparse_inverted indexes equal to documents.sparse and
-- documents.fts for every live row, the token statistics equal to the rows,
-- and no role under row-level security able to read the index. One row per
-- check: status 'ok', 'warning' (works, but slower) or 'error', and a detail
-- that names the rows and the fix. STABLE: one snapshot for all of it. Reads
-- every row and posting (memory grows with the index), so run it as the
-- owner, after a crash, a restore or an upgrade, not on every request.
create or replace function @extschema@.hybrid_search_check()
returns table (check_name text, status text, detail text)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.check(plpy)
$python$
language plpython3u stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_check is
'check that embeddings, fts, the dense and sparse indexes and the token statistics agree with documents';
