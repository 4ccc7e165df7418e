-------------------------------------------------------------------------------
-- requirements
-- PostgreSQL 16 resolves @extschema:vector@ itself; on PostgreSQL 15 the build
-- writes pgvector's schema into this script (make VECTOR_SCHEMA=...). Either
-- way, fail early and clearly if pgvector is too old or lives elsewhere.
do $block$
declare
    vector_schema text;
    vector_version text;
begin
    select e.extnamespace::regnamespace::text, e.extversion
    into vector_schema, vector_version
    from pg_catalog.pg_extension as e
    where e.extname = 'vector';

    if vector_schema is distinct from '@extschema:vector@' then
        raise exception 'hybrid_search: pgvector is installed in schema %, but this build expects schema %',
            vector_schema, '@extschema:vector@'
        using hint = 'rebuild the extension with make -C extension install VECTOR_SCHEMA=<schema of vector>';
    end if;

    if pg_catalog.string_to_array(pg_catalog.split_part(vector_version, '-', 1), '.')::int[]
        < array[0, 7] then
        raise exception 'hybrid_search: pgvector % is too old; sparsevec needs pgvector 0.7 or later',
            vector_version
        using hint = 'run hybrid-search setup, or ALTER EXTENSION vector UPDATE';
    end if;
end;
$block$;
