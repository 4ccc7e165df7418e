-------------------------------------------------------------------------------
-- dense_search (vector)
-- The k documents nearest to a dense query vector by cosine similarity
-- (score = 1 - cosine distance), restricted to metadata @> filter.
create function @extschema@.dense_search(
    query_dense @extschema:vector@.vector,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('dense_search', k, filter);
    if query_dense is null then
        raise exception 'dense_search: query vector must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    return query
    select
        n.id,
        (row_number() over (order by n.distance, n.id))::integer,
        1 - n.distance
    from (
        select
            d.id,
            d.dense operator(@extschema:vector@.<=>) query_dense as distance
        from @extschema@.documents as d
        where d.dense is not null and (filter is null or d.metadata @> filter)
        order by distance, d.id
        limit k
    ) as n
    order by n.distance, n.id;
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_search(@extschema:vector@.vector, integer, jsonb) is
'k nearest documents to a dense query vector (cosine), optionally filtered by metadata @> filter';

-------------------------------------------------------------------------------
-- dense_search (text)
-- Embeds the query in this backend, then searches as above.
create function @extschema@.dense_search(
    query text,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_query_text('dense_search', query);
    perform @extschema@._check_search_arguments('dense_search', k, filter);
    return query
    select * from @extschema@.dense_search(@extschema@.embed_dense(query), k, filter);
end;
$func$
language plpgsql stable parallel restricted security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_search(text, integer, jsonb) is
'k documents nearest to the query by BGE-M3 dense similarity, optionally filtered by metadata @> filter';
