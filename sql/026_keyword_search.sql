-------------------------------------------------------------------------------
-- _bm25query_shared
-- The bm25query of these lexemes with documents_fts_bm25_idx's statistics,
-- for a role under row-level security, once the owner has opted in with
-- hybrid_search_configure(bm25_statistics => 'index'). Runs as the owner, as
-- _bm25query refuses a role under row-level security: the statistics count
-- every tenant's rows, so they tell the caller how many rows hold each query
-- word (README, Security). Refuses unless the owner opted in.
create or replace function @extschema@._bm25query_shared(
    lexemes tsvector, k1 double precision, b double precision
) returns @extschema@.bm25query
as $func$
begin
    if (select s.bm25_statistics from @extschema@.hybrid_search_settings as s) <> 'index' then
        raise exception 'hybrid_search: the index''s BM25 statistics are not shared with roles under row-level security'
        using
            errcode = 'insufficient_privilege',
            hint = 'the extension owner opts in with hybrid_search_configure(bm25_statistics => ''index'')';
    end if;
    return @extschema@._bm25query(
        '@extschema@.documents_fts_bm25_idx'::regclass, lexemes, k1, b
    );
end;
$func$
language plpgsql stable security definer
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _bm25query_rows
-- The bm25query of these lexemes with the statistics of the rows of
-- documents the caller sees and row_filter (NULL: all) matches, computed now:
-- one pass over them (_bm25_visible_statistics, in C: each row's length and
-- which query lexemes it has). O(those rows), against O(query lexemes) from
-- the index's statistics.
create or replace function @extschema@._bm25query_rows(
    lexemes tsvector, k1 double precision, b double precision, row_filter jsonb
) returns @extschema@.bm25query
as $func$
declare
    counted bigint[];
begin
    select @extschema@._bm25_visible_statistics(d.fts, lexemes) into counted
    from @extschema@.documents as d
    where d.fts is not null and (row_filter is null or d.metadata operator(pg_catalog.@>) row_filter);
    if counted is null then
        return @extschema@._bm25query_statistics(lexemes, k1, b, 0, 0, '{}', '{}');
    end if;
    -- counted: rows, total length, then the df of each lexeme in lexemes' order
    return @extschema@._bm25query_statistics(
        lexemes, k1, b, counted[1], counted[2],
        pg_catalog.tsvector_to_array(lexemes), counted[3:]
    );
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _keyword_bm25query
-- The bm25query of a keyword search: the query's lexemes under config,
-- weighted with documents_fts_bm25_idx's statistics, or, for a role under
-- row-level security on documents, with those of the rows it sees (computed
-- now, one pass over them): corpus-wide statistics would tell it which words
-- other tenants use. The bound on that work: every query reads every row
-- the role's policies let it see (and evaluates the policies on every row
-- of the table unless an index serves them), counting each one's fts:
-- O(visible rows), against O(query lexemes) from the index. Caching the
-- result is sound only if the policies depend on the role alone, not on
-- settings or other tables. Unless a copy of the index holds exactly the
-- role's rows: a filter's own BM25 index (hybrid_search_create_filter_indexes)
-- whose filter is the role's policies (_bm25_policy_index). Its statistics
-- are then the role's rows as an index counts them (deleted rows count until
-- VACUUM), read in O(query lexemes). Else, when the policies are one
-- condition on an expression a btree indexes (tenant = 3), they are counted
-- in the BM25 index over the rows that btree names (_bm25query_policy_rows):
-- one pass over its row list and the query lexemes' postings, no table row
-- read, the same rows counted the same way. With bm25_statistics 'index' (the
-- owner's opt-in) such a role gets the index's statistics instead
-- (_bm25query_shared).
-- PARALLEL UNSAFE: the EXCEPTION block is a subtransaction.
create or replace function @extschema@._keyword_bm25query(
    caller text, query text, config regconfig
) returns @extschema@.bm25query
as $func$
declare
    lexemes tsvector;
    settings record;
    policy_index regclass;
    counted @extschema@.bm25query;
begin
    select s.bm25_k1, s.bm25_b, s.bm25_statistics into settings
    from @extschema@.hybrid_search_settings as s;
    begin
        lexemes := pg_catalog.to_tsvector(config, query);
    exception when program_limit_exceeded then
        raise exception '%: a query of % characters makes a tsvector over PostgreSQL''s 1 MB limit',
            caller, pg_catalog.length(query)
        using errcode = 'program_limit_exceeded', detail = sqlerrm, hint = 'shorten the query';
    end;
    if not pg_catalog.row_security_active('@extschema@.documents'::regclass) then
        return @extschema@._bm25query(
            '@extschema@.documents_fts_bm25_idx'::regclass, lexemes, settings.bm25_k1, settings.bm25_b
        );
    end if;
    if settings.bm25_statistics = 'index' then
        return @extschema@._bm25query_shared(lexemes, settings.bm25_k1, settings.bm25_b);
    end if;
    policy_index := @extschema@._bm25_policy_index('@extschema@.documents_fts_bm25_idx'::regclass);
    if policy_index is not null then
        return @extschema@._bm25query(policy_index, lexemes, settings.bm25_k1, settings.bm25_b);
    end if;
    counted := @extschema@._bm25query_policy_rows(
        '@extschema@.documents_fts_bm25_idx'::regclass, lexemes, settings.bm25_k1, settings.bm25_b
    );
    if counted is not null then
        return counted;
    end if;
    return @extschema@._bm25query_rows(lexemes, settings.bm25_k1, settings.bm25_b, null);
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- keyword_search
-- Okapi BM25 over PostgreSQL's own lexemes: the query is turned into lexemes
-- with the text search configuration documents.fts is built with, and a
-- document matching any of them (OR) is scored
--   sum over query lexemes of idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))
-- with tf = the lexeme's positions in fts, len = all positions, and
-- idf = ln(1 + (N - df + 0.5) / (df + 0.5)). The statistics (N, avg_len,
-- df) are those documents_fts_bm25_idx holds at the call
-- (018_bm25_access_method.sql: rows deleted or updated away count until
-- VACUUM), or for a role under row-level security those of the rows it sees
-- (_keyword_bm25query). An index scan in exact score order: the filter, the
-- match and row-level security are checked row by row while the scan goes
-- on, so k rows come back whenever k visible rows match; ties at the k-th
-- score are all read (WITH TIES) and broken by id. match, in
-- websearch_to_tsquery syntax ("quoted phrase", or, -word), restricts the
-- documents scored. A query of stop words only finds nothing.
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
    bm25 @extschema@.bm25query;
    match_query tsquery;
begin
    perform @extschema@._check_query_text('keyword_search', query);
    perform @extschema@._check_search_arguments('keyword_search', k, filter);
    if @extschema@._is_coordinator() then
        -- every shard's k best with the global statistics (017_coordinator.sql)
        return query
        select l.id, l.rank, l.score
        from @extschema@._coordinator_legs('keyword_search', query, null, null, k, filter, 100, match) as l;
        return;
    end if;
    bm25 := @extschema@._keyword_bm25query('keyword_search', query, config);
    match_query := case when match is not null then pg_catalog.websearch_to_tsquery(config, match) end;
    return query
    select s.id, s.rank, s.score
    from @extschema@._keyword_search_bm25query(bm25, k, filter, match_query) as s;
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.keyword_search is
'k best BM25 matches for the query''s lexemes (OR), optionally filtered by metadata and a websearch match';

-------------------------------------------------------------------------------
-- _keyword_search_bm25query
-- keyword_search's scan with a bm25query made by the caller: the one above,
-- or on a shard one weighted with every shard's statistics (040_shard_legs.sql).
create or replace function @extschema@._keyword_search_bm25query(
    bm25 @extschema@.bm25query,
    k integer,
    filter jsonb,
    match_query tsquery
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    saved text[] := @extschema@._search_settings_push(k, null, filter is not null);
begin
    return query
    select
        n.id,
        (row_number() over (order by n.distance, n.id))::integer,
        -n.distance
    from (
        select
            d.id,
            d.fts operator(@extschema@.<&>) bm25 as distance
        from @extschema@.documents as d
        where
            d.fts is not null
            and (filter is null or d.metadata @> filter)
            and (match_query is null or d.fts @@ match_query)
        order by distance
        fetch first k rows with ties
    ) as n
    where n.distance < 0
    order by n.distance, n.id
    limit k;
    perform @extschema@._search_settings_pop(saved);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp
set "hybrid_search.sparse_positive_only" to on;

comment on function @extschema@._keyword_search_bm25query is
'the k best rows for a bm25query (keyword_search''s index scan)';

-------------------------------------------------------------------------------
-- keyword_search_scan
-- keyword_search with index scans off: the same ranking, with the same index
-- statistics, by computing every document's score; the exact reference
-- keyword_search is tested against.
create or replace function @extschema@.keyword_search_scan(
    query text,
    k integer default 10,
    filter jsonb default null,
    match text default null
) returns table (id bigint, rank integer, score double precision)
as $func$
    select s.id, s.rank, s.score
    from @extschema@.keyword_search(query, k, filter, match) as s;
$func$
language sql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp
set enable_indexscan to off
set enable_bitmapscan to off;

comment on function @extschema@.keyword_search_scan is
'BM25 with the keyword index''s statistics by scoring every document (exact reference for keyword_search)';
