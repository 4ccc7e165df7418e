-------------------------------------------------------------------------------
-- keyword_search
-- PostgreSQL full-text search: websearch_to_tsquery syntax ("quoted phrase",
-- or, -word), ranked by ts_rank_cd. text_search_config defaults to the one
-- documents.fts was built with; a query of stop words only finds nothing.
-- Ranking reads every matching document's tsvector, so its cost is bounded:
-- when more than max_matches documents match, only the first max_matches the
-- GIN index yields are ranked (an unselective query then ranks a sample).
create function @extschema@.keyword_search(
    query text,
    k integer default 10,
    filter jsonb default null,
    text_search_config regconfig default null,
    max_matches integer default 2000
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    tsq tsquery;
begin
    perform @extschema@._check_query_text('keyword_search', query);
    perform @extschema@._check_search_arguments('keyword_search', k, filter);
    if max_matches is null or max_matches < k then
        raise exception 'keyword_search: max_matches must be at least k (%), got %',
            k, coalesce(max_matches::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    tsq := pg_catalog.websearch_to_tsquery(
        coalesce(
            text_search_config,
            (select s.text_search_config from @extschema@.hybrid_search_settings as s)
        ),
        query
    );
    return query
    select
        n.id,
        (row_number() over (order by n.score desc, n.id))::integer,
        n.score
    from (
        select
            m.id,
            pg_catalog.ts_rank_cd(m.fts, tsq)::double precision as score
        from (
            select d.id, d.fts
            from @extschema@.documents as d
            where d.fts @@ tsq and (filter is null or d.metadata @> filter)
            limit max_matches
        ) as m
        order by score desc, m.id
        limit k
    ) as n
    order by n.score desc, n.id;
end;
$func$
language plpgsql stable parallel safe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.keyword_search is
'k best full-text matches (websearch_to_tsquery, ts_rank_cd; at most max_matches ranked), optionally filtered';
