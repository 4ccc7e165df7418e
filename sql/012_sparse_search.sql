-------------------------------------------------------------------------------
-- sparse_search_scan
-- The sparse leg as a plain scan: the k documents with the highest lexical
-- matching score (sparse_dot), computed for every document. Exact and slow
-- on large tables; the reference the index is tested and measured against,
-- and what sparse_search uses until the index is first built.
create or replace function @extschema@.sparse_search_scan(
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('sparse_search_scan', k, filter);
    perform @extschema@._check_query_vector('sparse_search_scan', query_sparse is null);
    -- <#> is the negative inner product, so ascending order is best first
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
        where
            d.sparse is not null
            and (filter is null or d.metadata @> filter)
            and d.sparse operator(@extschema:vector@.<#>) query_sparse < 0
        order by negative_dot, d.id
        limit k
    ) as n
    order by n.negative_dot, n.id;
end;
$func$
language plpgsql stable parallel safe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_search_scan is
'k documents with the highest lexical matching score, by scanning every document (exact reference)';

-------------------------------------------------------------------------------
-- _sparse_search_index
-- (id, score) best first from the inverted index plus the documents changed
-- since it was built; see plpython/hybrid_search/sparse_index.py. STABLE, so
-- all its reads share one snapshot.
create or replace function @extschema@._sparse_search_index(
    query_sparse @extschema:vector@.sparsevec, k integer, filter jsonb
) returns table (id bigint, score double precision)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.sparse_index_search(plpy, query_sparse, k, filter)
$python$
language plpython3u stable parallel restricted security invoker rows 100
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- sparse_search (sparsevec)
-- The k documents with the highest lexical matching score (sparse_dot) for a
-- sparse query vector, exact; documents sharing no weighted token are left
-- out. Through documents_sparse_idx (sparse_inverted, 016) when it exists: an
-- index scan in <#> order, filter and row-level security checked row by row
-- as the scan goes on (so k rows come back whenever k visible matching rows
-- exist), ties at the k-th score all read (WITH TIES) and broken by id;
-- hybrid_search.sparse_positive_only ends the scan after the rows that share
-- a token with the query. Without that index, through the table-based one.
create or replace function @extschema@.sparse_search(
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('sparse_search', k, filter);
    perform @extschema@._check_query_vector('sparse_search', query_sparse is null);
    if exists (
        select from pg_catalog.pg_index as i
        where
            i.indexrelid = pg_catalog.to_regclass('@extschema@.documents_sparse_idx')
            and i.indisvalid
    ) then
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
        return;
    end if;
    return query
    select
        r.id,
        (row_number() over (order by r.score desc, r.id))::integer,
        r.score
    from @extschema@._sparse_search_index(query_sparse, k, filter) as r
    order by r.score desc, r.id;
end;
$func$
language plpgsql stable parallel restricted security invoker rows 100
set search_path to pg_catalog, pg_temp
set "hybrid_search.sparse_positive_only" to on;

comment on function @extschema@.sparse_search(@extschema:vector@.sparsevec, integer, jsonb) is
'k documents with the highest lexical matching score for a sparse query vector (inverted index, exact)';

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
language plpgsql stable parallel restricted security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_search(text, integer, jsonb) is
'k documents with the highest BGE-M3 lexical matching score for the query';
