-------------------------------------------------------------------------------
-- _check_filter
-- A filter is matched with @> against metadata, a JSON object: any other JSON
-- would match rows by containment rules nobody meant.
create or replace function @extschema@._check_filter(caller text, filter jsonb)
returns void
as $func$
begin
    if filter is not null and pg_catalog.jsonb_typeof(filter) <> 'object' then
        raise exception '%: filter must be a JSON object matched with @>, got a JSON %',
            caller, pg_catalog.jsonb_typeof(filter)
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_search_arguments
-- The argument checks every search function shares, so that bad input gets
-- the same clear error everywhere instead of an empty or surprising result.
create or replace function @extschema@._check_search_arguments(
    caller text, k integer, filter jsonb
) returns void
as $func$
begin
    if k is null or k < 1 or k > 10000 then
        raise exception '%: k must be between 1 and 10000, got %', caller, coalesce(k::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    perform @extschema@._check_filter(caller, filter);
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_query_text
-- A search needs something to search for.
create or replace function @extschema@._check_query_text(caller text, query text)
returns void
as $func$
begin
    if query is null or pg_catalog.btrim(query) = '' then
        raise exception '%: query must be a non-empty text', caller
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_query_vector
-- The vector overloads need a vector.
create or replace function @extschema@._check_query_vector(caller text, missing boolean)
returns void
as $func$
begin
    if missing then
        raise exception '%: query vector must not be NULL', caller
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _dense_index_is_graph
-- Whether documents_dense_idx is a dense_flat index
-- (hybrid_search_create_dense_index('graph')): it then serves a filtered
-- dense leg too, in place of documents_dense_filter_idx.
create or replace function @extschema@._dense_index_is_graph()
returns boolean
as $func$
begin
    return exists (
        select from pg_catalog.pg_class as c
        inner join pg_catalog.pg_am as a on c.relam = a.oid
        where
            c.oid = pg_catalog.to_regclass('@extschema@.documents_dense_idx')
            and a.amname = 'dense_flat'
    );
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _search_settings_push
-- What a search function sets for its statement: no gin_fuzzy_search_limit
-- (a GIN scan under it returns a sample of its rows, and a filtered leg may
-- read documents_metadata_idx); a sparse_inverted scan's
-- first batch that holds the rows rows it returns and those past them that
-- WITH TIES (and the executor's reordering) look at, so that no second batch,
-- four times as large, is ranked (never below the session's own
-- hybrid_search.sparse_batch_size). With ef_search (a statement with a dense
-- leg): HNSW's ef_search (and a dense_flat graph's walk width) raised to rows,
-- iterative index scans that keep
-- going until rows rows pass a filter, and sequential scans off (the
-- planner's cost model often prefers one on tables of some ten thousand rows,
-- at 50x the latency); with a filter or a row-level-security policy and
-- documents_dense_filter_idx (or a graph documents_dense_idx), bitmap scans off too (a bitmap scan of the
-- filter's or the policy's rows and a sort computes the distance of every
-- one from its vector, which the planner does not cost: 19 ms against
-- dense_flat's 5 at 3,000 rows of 1024 dimensions, ad hoc; and a policy's
-- condition on metadata, estimated at a few rows, put it before the
-- policy's own HNSW copy); and, unless the statement is filtered, a generic
-- plan, planned once instead of at every call (the plan cache keeps custom
-- plans, which drop "filter is null" and so look cheaper). Only with
-- sequential scans off: a generic plan does not know k, and under a
-- row-level-security policy it chose a sequential scan over the index (BM25
-- leg 1.5 -> 116 ms). A filtered statement is planned at every call: with
-- the filter's value in the plan, "filter is null or metadata @> filter" is
-- metadata @> value, an index condition of the sparse_inverted indexes
-- (their filter column), which a generic plan would leave to the executor.
-- Set locally: a change made inside a function lasts until the transaction
-- ends, so the caller hands the returned settings (name, value to put back,
-- in pairs) to _search_settings_pop after its statement. (A fixed value,
-- such as hybrid_search.sparse_positive_only, is the function's own SET
-- clause, which PostgreSQL puts back at its exit.)
create or replace function @extschema@._search_settings_push(
    rows integer,
    ef_search integer default null,
    filtered boolean default false
)
returns text[]
as $func$
declare
    -- a setting not defined yet is put back at its library's default
    saved text[] := array[
        'hybrid_search.sparse_batch_size',
        coalesce(pg_catalog.current_setting('hybrid_search.sparse_batch_size', true), '100'),
        'gin_fuzzy_search_limit', pg_catalog.current_setting('gin_fuzzy_search_limit')
    ];
begin
    perform pg_catalog.set_config(
        'hybrid_search.sparse_batch_size', greatest(saved[2]::integer, rows + rows / 4 + 8)::text, true
    );
    perform pg_catalog.set_config('gin_fuzzy_search_limit', '0', true);
    if ef_search is not null then
        saved := saved || array[
            'hnsw.ef_search', coalesce(pg_catalog.current_setting('hnsw.ef_search', true), '40'),
            'hnsw.iterative_scan', coalesce(pg_catalog.current_setting('hnsw.iterative_scan', true), 'off'),
            'hybrid_search.dense_ef_search',
            coalesce(pg_catalog.current_setting('hybrid_search.dense_ef_search', true), '40'),
            'enable_seqscan', pg_catalog.current_setting('enable_seqscan')
        ];
        perform pg_catalog.set_config('hnsw.ef_search', least(greatest(ef_search, rows), 1000)::text, true);
        perform pg_catalog.set_config('hnsw.iterative_scan', 'relaxed_order', true);
        perform pg_catalog.set_config(
            'hybrid_search.dense_ef_search', least(greatest(ef_search, rows), 1000)::text, true
        );
        perform pg_catalog.set_config('enable_seqscan', 'off', true);
        if
            (filtered or pg_catalog.row_security_active('@extschema@.documents'))
            and (
                pg_catalog.to_regclass('@extschema@.documents_dense_filter_idx') is not null
                or @extschema@._dense_index_is_graph()
            )
        then
            saved := saved || array['enable_bitmapscan', pg_catalog.current_setting('enable_bitmapscan')];
            perform pg_catalog.set_config('enable_bitmapscan', 'off', true);
        end if;
    end if;
    if filtered or ef_search is not null then
        saved := saved || array['plan_cache_mode', pg_catalog.current_setting('plan_cache_mode')];
        perform pg_catalog.set_config(
            'plan_cache_mode', case when filtered then 'force_custom_plan' else 'force_generic_plan' end, true
        );
    end if;
    return saved;
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._search_settings_push(integer, integer, boolean) is
'sets a search statement''s sparse batch, dense scan and plan mode; returns what _search_settings_pop puts back';

-------------------------------------------------------------------------------
-- _search_settings_pop
-- Puts back what _search_settings_push returned: each setting's old value
-- (nothing for NULL).
create or replace function @extschema@._search_settings_pop(saved text[])
returns void
as $func$
begin
    for i in 1 .. coalesce(pg_catalog.cardinality(saved), 0) by 2 loop
        perform pg_catalog.set_config(saved[i], saved[i + 1], true);
    end loop;
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._search_settings_pop(text[]) is
'puts back the settings _search_settings_push changed';
