-------------------------------------------------------------------------------
-- _filter_index_names
-- The search indexes and the names of their copies for a filter called name
-- (documents_<index>_<name>_idx); caller names the function in the error.
create or replace function @extschema@._filter_index_names(caller text, name text)
returns table (source text, target text)
as $func$
begin
    if name is null or name !~ '^[a-z0-9_]{1,32}$' then
        raise exception '%: name must be 1 to 32 of a-z, 0-9 and _, got %',
            caller, coalesce(pg_catalog.quote_literal(name), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    return query
    select s.source, pg_catalog.replace(s.source, '_idx', '_' || name || '_idx')
    from pg_catalog.unnest(
        array['documents_dense_idx', 'documents_sparse_idx', 'documents_fts_bm25_idx']
    ) as s (source);
end;
$func$
language plpgsql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_create_filter_indexes
-- For a filter searched often (a large tenant): a copy of each search index
-- (documents_dense_idx, documents_sparse_idx, documents_fts_bm25_idx)
-- holding only the rows metadata @> filter, named documents_<index>_<name>_idx
-- (an existing one is re-created). A search with exactly this filter is
-- planned with its value (_search_settings_push), so the planner proves the
-- copies' predicate and scans them: the dense leg walks a graph of the
-- filter's rows instead of discarding every other row it meets, and the
-- sparse legs rank the filter's rows only. The rows and scores are the full
-- indexes' (a bm25query carries its own statistics). The dense copy is made
-- like the current documents_dense_idx (none without one): call again after
-- hybrid_search_create_dense_index(). Builds lock documents against writes,
-- as CREATE INDEX does; the event trigger of 092_restore.sql remembers the
-- copies for hybrid_search_restore().
create or replace function @extschema@.hybrid_search_create_filter_indexes(
    name text, filter jsonb
) returns setof text
as $func$
declare
    source text;
    target text;
    definition text;
begin
    if filter is null or pg_catalog.jsonb_typeof(filter) <> 'object' or filter = '{}'::jsonb then
        raise exception 'hybrid_search_create_filter_indexes: filter must be a non-empty JSON object, got %',
            coalesce(filter::text, 'NULL')
        using errcode = 'invalid_parameter_value',
        hint = 'the filter searches pass, such as {"tenant": 3}';
    end if;
    for source, target in
        select n.source, n.target from @extschema@._filter_index_names('hybrid_search_create_filter_indexes', name) as n
    loop
        if pg_catalog.to_regclass('@extschema@.' || target) is not null then
            execute pg_catalog.format('drop index @extschema@.%I', target);
        end if;
        definition := pg_catalog.pg_get_indexdef(pg_catalog.to_regclass('@extschema@.' || source));
        continue when definition is null;
        -- "CREATE INDEX <source> ON <table> USING ...": the same index, renamed, partial
        execute pg_catalog.regexp_replace(
            definition, '^CREATE INDEX \S+ ON ', pg_catalog.format('CREATE INDEX %I ON ', target)
        ) || pg_catalog.format(' WHERE (metadata OPERATOR(pg_catalog.@>) %L::jsonb)', filter);
        return next target;
    end loop;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_create_filter_indexes(text, jsonb) is
'(re)create copies of the search indexes holding only the rows metadata @> filter, for searches with that filter';

-------------------------------------------------------------------------------
-- hybrid_search_drop_filter_indexes
-- Drops the copies hybrid_search_create_filter_indexes(name, ...) made; the
-- names of those that existed.
create or replace function @extschema@.hybrid_search_drop_filter_indexes(name text)
returns setof text
as $func$
declare
    target text;
begin
    for target in
        select n.target from @extschema@._filter_index_names('hybrid_search_drop_filter_indexes', name) as n
    loop
        continue when pg_catalog.to_regclass('@extschema@.' || target) is null;
        execute pg_catalog.format('drop index @extschema@.%I', target);
        return next target;
    end loop;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_drop_filter_indexes(text) is
'drop the copies of the search indexes hybrid_search_create_filter_indexes(name, ...) made';
