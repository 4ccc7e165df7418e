-------------------------------------------------------------------------------
-- dense_search (vector)
-- The k documents nearest to a dense query vector by cosine similarity
-- (score = 1 - cosine distance), restricted to metadata @> filter. Uses
-- documents_dense_idx when there is one: the default graph (dense_flat) or
-- HNSW walk ef_search wide (raised to k), which trades recall for speed, and
-- HNSW's iterative index scans keep going until k documents pass the
-- filter. With a halfvec index (hybrid_search_create_dense_index
-- ('hnsw_halfvec')) the index orders by half-precision distance and the k
-- rows it returns are re-ranked at full precision. A filtered call is served
-- by dense_flat, exact (the graph itself, or documents_dense_filter_idx
-- beside an HNSW index on the vector column), unless the filter allows so
-- many rows that the graph walks instead; with a halfvec index it keeps
-- HNSW's order (dense_flat was measured at 100,000 rows only). Sequential
-- scans are off, and an unfiltered call is planned once
-- (_search_settings_push); the settings are restored afterwards.
create or replace function @extschema@.dense_search(
    query_dense @extschema:vector@.vector,
    k integer default 10,
    filter jsonb default null,
    ef_search integer default 100
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    half_dimensions integer := @extschema@._dense_index_halfvec_dimensions();
    saved text[];
begin
    perform @extschema@._check_search_arguments('dense_search', k, filter);
    perform @extschema@._check_query_vector('dense_search', query_dense is null);
    if ef_search is null or ef_search < 1 or ef_search > 1000 then
        raise exception 'dense_search: ef_search must be between 1 and 1000, got %',
            coalesce(ef_search::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if @extschema@._is_coordinator() then
        -- every shard's k best, merged (017_coordinator.sql)
        return query
        select l.id, l.rank, l.score
        from @extschema@._coordinator_legs('dense_search', null, query_dense, null, k, filter, ef_search) as l;
        return;
    end if;
    saved := @extschema@._search_settings_push(k, ef_search, filter is not null);
    if half_dimensions is null then
        return query
        select
            n.id,
            (row_number() over (order by n.distance, n.id))::integer,
            1 - n.distance
        from (
            -- ordered by distance alone so that the index can deliver the order
            select
                d.id,
                d.dense operator(@extschema:vector@.<=>) query_dense as distance
            from @extschema@.documents as d
            where d.dense is not null and (filter is null or d.metadata @> filter)
            order by d.dense operator(@extschema:vector@.<=>) query_dense
            limit k
        ) as n
        order by n.distance, n.id;
    else
        -- the same query, ordered by the index's halfvec expression
        return query execute pg_catalog.format(
            'select n.id, (row_number() over (order by n.distance, n.id))::integer, 1 - n.distance'
            ' from (select d.id, d.dense operator(@extschema:vector@.<=>) $1 as distance'
            '  from @extschema@.documents as d'
            '  where d.dense is not null and ($3::jsonb is null or d.metadata @> $3)'
            '  order by d.dense::@extschema:vector@.halfvec(%1$s)'
            '   operator(@extschema:vector@.<=>) $1::@extschema:vector@.halfvec(%1$s)'
            '  limit $2) as n'
            ' order by n.distance, n.id',
            half_dimensions
        ) using query_dense, k, filter;
    end if;
    perform @extschema@._search_settings_pop(saved);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp
-- with sequential scans off, a plan that cannot use the index costs over
-- jit_above_cost, and JIT-compiling it costs far more than running it
set jit to off;

comment on function @extschema@.dense_search(@extschema:vector@.vector, integer, jsonb, integer) is
'k nearest documents to a dense query vector (cosine; the dense index walked ef_search wide), optionally filtered';

-------------------------------------------------------------------------------
-- dense_search (text)
-- Embeds the query in this backend, then searches as above.
create or replace function @extschema@.dense_search(
    query text,
    k integer default 10,
    filter jsonb default null,
    ef_search integer default 100
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_query_text('dense_search', query);
    perform @extschema@._check_query_model('dense_search');
    perform @extschema@._check_search_arguments('dense_search', k, filter);
    return query
    select * from @extschema@.dense_search(@extschema@.embed_dense(query), k, filter, ef_search);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_search(text, integer, jsonb, integer) is
'k documents nearest to the query by BGE-M3 dense similarity, optionally filtered by metadata @> filter';
