-------------------------------------------------------------------------------
-- keyword_search
-- Okapi BM25 over PostgreSQL's own lexemes: the query is turned into lexemes
-- with the text search configuration documents.fts is built with, and a
-- document matching any of them (OR) is scored
--   sum over query lexemes of idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))
-- with tf = the lexeme's positions in fts and len = all positions. Exact top
-- k through the keyword inverted index (030_keyword_index.sql); statistics
-- are those of the last hybrid_search_refresh(). match, in websearch_to_tsquery
-- syntax ("quoted phrase", or, -word), restricts the documents scored. A query
-- of stop words only finds nothing.
create or replace function @extschema@.keyword_search(
    query text,
    k integer default 10,
    filter jsonb default null,
    match text default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    config regconfig := (select s.text_search_config from @extschema@.hybrid_search_settings as s);
begin
    perform @extschema@._check_query_text('keyword_search', query);
    perform @extschema@._check_search_arguments('keyword_search', k, filter);
    return query
    select
        r.id,
        (row_number() over (order by r.score desc, r.id))::integer,
        r.score
    from @extschema@._keyword_search_bm25(
        config::text, query, k, filter,
        case when match is not null then pg_catalog.websearch_to_tsquery(config, match) end,
        false
    ) as r
    order by r.score desc, r.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.keyword_search is
'k best BM25 matches for the query''s lexemes (OR), optionally filtered by metadata and a websearch match';

-------------------------------------------------------------------------------
-- keyword_search_scan
-- The same ranking by reading every document's fts, with statistics computed
-- now: the exact reference for keyword_search, and what it does until the
-- keyword index is first built.
create or replace function @extschema@.keyword_search_scan(
    query text,
    k integer default 10,
    filter jsonb default null,
    match text default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    config regconfig := (select s.text_search_config from @extschema@.hybrid_search_settings as s);
begin
    perform @extschema@._check_query_text('keyword_search_scan', query);
    perform @extschema@._check_search_arguments('keyword_search_scan', k, filter);
    return query
    select
        r.id,
        (row_number() over (order by r.score desc, r.id))::integer,
        r.score
    from @extschema@._keyword_search_bm25(
        config::text, query, k, filter,
        case when match is not null then pg_catalog.websearch_to_tsquery(config, match) end,
        true
    ) as r
    order by r.score desc, r.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.keyword_search_scan is
'BM25 by reading every document with current statistics (exact reference for keyword_search)';
