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
-- _filter_index_statements
-- The statements that (re)create the copies of the search indexes for a
-- filter called name (documents_<index>_<name>_idx), holding only the rows
-- metadata @> filter: a DROP INDEX of each copy there is, then each search
-- index's own definition (pg_get_indexdef), renamed and made partial. So the
-- dense copy has documents_dense_idx's method, options and halfvec
-- expression, and there is none without a dense index. concurrent: DROP and
-- CREATE INDEX CONCURRENTLY, for psql's \gexec. caller names the function in
-- errors.
create or replace function @extschema@._filter_index_statements(
    caller text, name text, filter jsonb, concurrent boolean
) returns setof text
as $func$
declare
    copy record;
    how text := case when concurrent then 'CONCURRENTLY ' else '' end;
    definition text;
begin
    if filter is null or pg_catalog.jsonb_typeof(filter) <> 'object' or filter = '{}'::jsonb then
        raise exception '%: filter must be a non-empty JSON object, got %', caller, coalesce(filter::text, 'NULL')
        using errcode = 'invalid_parameter_value',
        hint = 'the filter searches pass, such as {"tenant": 3}';
    end if;
    if concurrent is null then
        raise exception '%: concurrent must not be NULL', caller
        using errcode = 'invalid_parameter_value';
    end if;
    for copy in select n.source, n.target from @extschema@._filter_index_names(caller, name) as n loop
        if pg_catalog.to_regclass('@extschema@.' || copy.target) is not null then
            return next pg_catalog.format('DROP INDEX %s@extschema@.%I', how, copy.target);
        end if;
        definition := pg_catalog.pg_get_indexdef(pg_catalog.to_regclass('@extschema@.' || copy.source));
        continue when definition is null;
        -- "CREATE INDEX <source> ON <table> USING ...": the same index, renamed, partial
        return next pg_catalog.regexp_replace(
            definition, '^CREATE INDEX \S+ ON ', pg_catalog.format('CREATE INDEX %s%I ON ', how, copy.target)
        ) || pg_catalog.format(' WHERE (metadata OPERATOR(pg_catalog.@>) %L::jsonb)', filter);
    end loop;
end;
$func$
language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_create_filter_indexes
-- For a filter searched often (a large tenant): a copy of each search index
-- (documents_dense_idx, documents_sparse_idx, documents_fts_bm25_idx)
-- holding only the rows metadata @> filter (_filter_index_statements; an
-- existing copy is re-created); the names of the copies. A search with
-- exactly this filter is planned with its value (_search_settings_push), so
-- the planner proves the copies' predicate and scans them: the dense leg
-- walks a graph of the filter's rows instead of discarding every other row
-- it meets, and the sparse legs rank the filter's rows only. The rows and
-- scores are the full indexes' (a bm25query carries its own statistics).
-- Call again after hybrid_search_create_dense_index(). Builds lock documents
-- against writes, as CREATE INDEX does (hybrid_search_filter_index_statements
-- gives the CONCURRENTLY form); the event trigger of 092_restore.sql
-- remembers the copies for hybrid_search_restore().
create or replace function @extschema@.hybrid_search_create_filter_indexes(
    name text, filter jsonb
) returns setof text
as $func$
declare
    statement text;
begin
    for statement in
        select s.s from @extschema@._filter_index_statements(
            'hybrid_search_create_filter_indexes', name, filter, false
        ) as s (s)
    loop
        execute statement;
    end loop;
    return query
    select n.target from @extschema@._filter_index_names('hybrid_search_create_filter_indexes', name) as n
    where pg_catalog.to_regclass('@extschema@.' || n.target) is not null;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_create_filter_indexes(text, jsonb) is
'(re)create copies of the search indexes holding only the rows metadata @> filter, for searches with that filter';

-------------------------------------------------------------------------------
-- hybrid_search_filter_index_statements
-- What hybrid_search_create_filter_indexes runs, to run yourself: with
-- concurrent (the default) DROP and CREATE INDEX CONCURRENTLY, which do
-- not block writes to documents and cannot run inside a function or a
-- transaction block: in psql, select ... \gexec.
create or replace function @extschema@.hybrid_search_filter_index_statements(
    name text, filter jsonb, concurrent boolean default true
) returns setof text
as $func$
    select s.s
    from @extschema@._filter_index_statements(
        'hybrid_search_filter_index_statements', name, filter, concurrent
    ) as s (s);
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_filter_index_statements(text, jsonb, boolean) is
'the statements that (re)create a filter''s copies of the search indexes, CONCURRENTLY by default, for \gexec';

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
