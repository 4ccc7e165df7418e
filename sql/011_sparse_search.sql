-------------------------------------------------------------------------------
-- sparse_search (sparsevec)
-- The k documents with the highest lexical matching score (sparse_dot) for a
-- sparse query vector; documents sharing no weighted token are left out.
create function @extschema@.sparse_search(
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('sparse_search', k, filter);
    if query_sparse is null then
        raise exception 'sparse_search: query vector must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
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
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_search(@extschema:vector@.sparsevec, integer, jsonb) is
'k documents with the highest lexical matching score for a sparse query vector';

-------------------------------------------------------------------------------
-- sparse_search (text)
-- Embeds the query's lexical weights in this backend, then searches as above.
create function @extschema@.sparse_search(
    query text,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_query_text('sparse_search', query);
    perform @extschema@._check_search_arguments('sparse_search', k, filter);
    return query
    select * from @extschema@.sparse_search(@extschema@.embed_sparse(query), k, filter);
end;
$func$
language plpgsql stable parallel restricted security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_search(text, integer, jsonb) is
'k documents with the highest BGE-M3 lexical matching score for the query';
