-------------------------------------------------------------------------------
-- _dense_index_halfvec_dimensions
-- The dimensions of the halfvec expression in documents_dense_idx, or NULL
-- when the dense index (if any) is on the vector column itself.
create or replace function @extschema@._dense_index_halfvec_dimensions()
returns integer
as $func$
    select (pg_catalog.regexp_match(pg_catalog.pg_get_indexdef(i.indexrelid), 'halfvec\((\d+)\)'))[1]::integer
    from pg_catalog.pg_index as i
    where i.indexrelid = pg_catalog.to_regclass('@extschema@.documents_dense_idx');
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- dense_search (vector)
-- The k documents nearest to a dense query vector by cosine similarity
-- (score = 1 - cosine distance), restricted to metadata @> filter. Uses the
-- HNSW index when there is one: ef_search (raised to k) trades recall for
-- speed, and iterative index scans keep going until k documents pass the
-- filter. With a halfvec index (hybrid_search_create_dense_index
-- ('hnsw_halfvec')) the index orders by half-precision distance and the k
-- rows it returns are re-ranked at full precision. Sequential scans are
-- discouraged: the planner's cost model often
-- prefers one on tables of some ten thousand rows, at 50x the latency. The
-- settings are restored afterwards.
create or replace function @extschema@.dense_search(
    query_dense @extschema:vector@.vector,
    k integer default 10,
    filter jsonb default null,
    ef_search integer default 100
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    old_ef text := pg_catalog.current_setting('hnsw.ef_search', true);
    old_iterative text := pg_catalog.current_setting('hnsw.iterative_scan', true);
    old_seqscan text := pg_catalog.current_setting('enable_seqscan');
    half_dimensions integer := @extschema@._dense_index_halfvec_dimensions();
begin
    perform @extschema@._check_search_arguments('dense_search', k, filter);
    perform @extschema@._check_query_vector('dense_search', query_dense is null);
    if ef_search is null or ef_search < 1 or ef_search > 1000 then
        raise exception 'dense_search: ef_search must be between 1 and 1000, got %',
            coalesce(ef_search::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if @extschema@._is_coordinator() then
        -- every shard's k best, merged (042_coordinator.sql)
        return query
        select l.id, l.rank, l.score
        from @extschema@._coordinator_legs('dense_search', null, query_dense, null, k, filter, ef_search) as l;
        return;
    end if;
    perform pg_catalog.set_config('hnsw.ef_search', least(greatest(ef_search, k), 1000)::text, true);
    perform pg_catalog.set_config('hnsw.iterative_scan', 'relaxed_order', true);
    perform pg_catalog.set_config('enable_seqscan', 'off', true);
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
    perform pg_catalog.set_config('hnsw.ef_search', coalesce(old_ef, '40'), true);
    perform pg_catalog.set_config('hnsw.iterative_scan', coalesce(old_iterative, 'off'), true);
    perform pg_catalog.set_config('enable_seqscan', old_seqscan, true);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_search(@extschema:vector@.vector, integer, jsonb, integer) is
'k nearest documents to a dense query vector (cosine; HNSW with ef_search when indexed), optionally filtered';

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

-------------------------------------------------------------------------------
-- hybrid_search_create_dense_index
-- (Re)creates documents_dense_idx: HNSW (the default; m, ef_construction),
-- HNSW over half-precision copies of the vectors (hnsw_halfvec: half the
-- index memory, results re-ranked at full precision), IVFFlat (lists; build
-- it after loading data, its centroids come from the rows present), or none
-- for exact scans. hybrid_search_set_model()
-- creates the default once documents.dense has its dimensions.
create or replace function @extschema@.hybrid_search_create_dense_index(
    method text default 'hnsw',
    m integer default 16,
    ef_construction integer default 64,
    lists integer default 100
) returns text
as $func$
declare
    -- vector's type modifier is its number of dimensions (-1: none)
    dimensions integer := (
        select a.atttypmod from pg_catalog.pg_attribute as a
        where a.attrelid = '@extschema@.documents'::regclass and a.attname = 'dense'
    );
begin
    if method is null or method not in ('hnsw', 'hnsw_halfvec', 'ivfflat', 'none') then
        raise exception
            'hybrid_search_create_dense_index: method must be hnsw, hnsw_halfvec, ivfflat or none, got %',
            coalesce(pg_catalog.quote_literal(method), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if m is null or ef_construction is null or lists is null then
        raise exception 'hybrid_search_create_dense_index: m, ef_construction and lists must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    drop index if exists @extschema@.documents_dense_idx;
    if method = 'hnsw' then
        execute pg_catalog.format(
            'create index documents_dense_idx on @extschema@.documents'
            ' using hnsw (dense @extschema:vector@.vector_cosine_ops)'
            ' with (m = %s, ef_construction = %s)', m, ef_construction
        );
    elsif method = 'hnsw_halfvec' then
        if dimensions < 1 then
            raise exception 'hybrid_search_create_dense_index: documents.dense has no dimensions yet'
            using hint = 'call hybrid_search_set_model() first';
        end if;
        execute pg_catalog.format(
            'create index documents_dense_idx on @extschema@.documents using hnsw'
            ' ((dense::@extschema:vector@.halfvec(%s)) @extschema:vector@.halfvec_cosine_ops)'
            ' with (m = %s, ef_construction = %s)', dimensions, m, ef_construction
        );
    elsif method = 'ivfflat' then
        execute pg_catalog.format(
            'create index documents_dense_idx on @extschema@.documents'
            ' using ivfflat (dense @extschema:vector@.vector_cosine_ops) with (lists = %s)', lists
        );
    end if;
    return method;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_create_dense_index is
'(re)create the dense index on documents: hnsw (default), hnsw_halfvec, ivfflat or none';
