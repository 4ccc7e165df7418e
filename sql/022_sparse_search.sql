-------------------------------------------------------------------------------
-- sparse_search (sparsevec)
-- The k documents with the highest lexical matching score (sparse_dot) for a
-- sparse query vector, exact; documents sharing no weighted token are left
-- out. Through documents_sparse_idx (sparse_inverted, 016) when it exists: an
-- index scan in <#> order that ranks only the rows documents_metadata_idx
-- finds for the filter (from its second batch; sparse_filter.c), policy and
-- filter checked row by row as the scan goes on (so k rows come back whenever k visible matching rows
-- exist), ties at the k-th score all read (WITH TIES) and broken by id;
-- hybrid_search.sparse_positive_only ends the scan after the rows that share
-- a token with the query; its first batch is sized for k
-- (_search_settings_push: PARALLEL UNSAFE). Without that index, a sequential
-- scan and a sort return the same rows.
create or replace function @extschema@.sparse_search(
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    saved text[];
begin
    perform @extschema@._check_search_arguments('sparse_search', k, filter);
    perform @extschema@._check_query_vector('sparse_search', query_sparse is null);
    if @extschema@._is_coordinator() then
        -- every shard's k best, merged (017_coordinator.sql)
        return query
        select l.id, l.rank, l.score
        from @extschema@._coordinator_legs('sparse_search', null, null, query_sparse, k, filter, 100) as l;
        return;
    end if;
    saved := @extschema@._search_settings_push(k, null, filter is not null);
    return query
    select
        n.id,
        (row_number() over (order by n.negative_dot, n.id))::integer,
        -n.negative_dot
    from (
        select
            d.id,
            d.sparse operator(@extschema:vector@.<#>) query_sparse as negative_dot
        from @extschema@.documents as d
        where d.sparse is not null and (filter is null or d.metadata @> filter)
        order by negative_dot
        fetch first k rows with ties
    ) as n
    where n.negative_dot < 0
    order by n.negative_dot, n.id
    limit k;
    perform @extschema@._search_settings_pop(saved);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp
set "hybrid_search.sparse_positive_only" to on;

comment on function @extschema@.sparse_search(@extschema:vector@.sparsevec, integer, jsonb) is
'k documents with the highest lexical matching score for a sparse query vector (inverted index, exact)';

-------------------------------------------------------------------------------
-- sparse_search_scan
-- The sparse leg as a plain scan: sparse_search with index scans off, so
-- sparse_dot is computed for every document. Exact and slow on large tables;
-- the reference the index is tested and measured against.
create or replace function @extschema@.sparse_search_scan(
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
    select s.id, s.rank, s.score
    from @extschema@.sparse_search(query_sparse, k, filter) as s;
$func$
-- unsafe by name: the text overload of sparse_search embeds with PL/Python
language sql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp
set enable_indexscan to off;

comment on function @extschema@.sparse_search_scan is
'k documents with the highest lexical matching score, by scanning every document (exact reference)';

-------------------------------------------------------------------------------
-- sparse_search (text)
-- Embeds the query's lexical weights in this backend, then searches as above.
create or replace function @extschema@.sparse_search(
    query text,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_query_text('sparse_search', query);
    perform @extschema@._check_query_model('sparse_search');
    perform @extschema@._check_search_arguments('sparse_search', k, filter);
    return query
    select * from @extschema@.sparse_search(@extschema@.embed_sparse(query), k, filter);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_search(text, integer, jsonb) is
'k documents with the highest BGE-M3 lexical matching score for the query';
