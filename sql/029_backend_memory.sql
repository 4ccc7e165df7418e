-------------------------------------------------------------------------------
-- hybrid_search_backend_memory
-- Every server process with its memory (RSS, PSS, private, from
-- /proc/<pid>/smaps_rollup), whether it has loaded torch (every process does
-- when the postmaster preloads it), and how many files of the configured
-- model it maps (only the backends that embedded). PSS shares mapped weights among the
-- processes mapping them, so sum(pss_mb) is what the server really uses.
-- Granted to pg_monitor only: it shows server internals.
create or replace function @extschema@.hybrid_search_backend_memory()
returns table (
    pid integer,
    backend_type text,
    application_name text,
    torch_loaded boolean,
    model_files_mapped integer,
    rss_mb double precision,
    pss_mb double precision,
    private_mb double precision
)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.backend_memory(plpy)
$python$
language plpython3u volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_backend_memory is
'memory (RSS, PSS, private MB) of every server process, and which have loaded torch and the model';

revoke all on function @extschema@.hybrid_search_backend_memory() from public;
grant execute on function @extschema@.hybrid_search_backend_memory() to pg_monitor;
grant execute on function @extschema@.hybrid_search_load_python() to pg_monitor;
