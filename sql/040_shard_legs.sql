-------------------------------------------------------------------------------
-- A shard's side of sharded search (014_shards.sql): what a coordinator's
-- _coordinator_legs and _coordinator_documents (017_coordinator.sql) call
-- on every shard, over the shard's own legs (020-026).

-------------------------------------------------------------------------------
-- _shard_bm25_statistics
-- On a shard: the BM25 statistics keyword_search would use here for query
-- (rows, their total length, each query lexeme's df), for the coordinator
-- to add up over all shards (Elasticsearch's dfs_query_then_fetch); with
-- tenant (a metadata filter: a role restricted to one tenant), those of the
-- rows it matches, counted now.
create or replace function @extschema@._shard_bm25_statistics(query text, tenant jsonb)
returns jsonb
as $func$
declare
    settings record;
    statistics jsonb;
begin
    select s.text_search_config, s.bm25_k1, s.bm25_b into settings
    from @extschema@.hybrid_search_settings as s;
    if tenant is null then
        statistics := @extschema@._keyword_bm25query('hybrid_search', query, settings.text_search_config)::text::jsonb;
    else
        statistics := @extschema@._bm25query_rows(
            pg_catalog.to_tsvector(settings.text_search_config, query), settings.bm25_k1, settings.bm25_b, tenant
        )::text::jsonb;
    end if;
    return pg_catalog.jsonb_build_object(
        'documents', (statistics ->> 'documents')::double precision::bigint,
        -- an integer count, recovered exactly from its average
        'total_length', pg_catalog.round(
            (statistics ->> 'avgdl')::double precision * (statistics ->> 'documents')::double precision
        ),
        'dfs', (
            select coalesce(pg_catalog.jsonb_object_agg(t ->> 'lexeme', (t ->> 'df')::bigint), '{}')
            from pg_catalog.jsonb_array_elements(statistics -> 'terms') as t
        )
    );
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _shard_legs
-- On a shard: each leg's k best rows here as [[id, score], ...], for the
-- request the coordinator sends: query, dense, sparse (vectors as text),
-- k, filter, ef_search, the corpus-wide BM25 statistics (documents,
-- total_length, dfs) and keyword_search's match. A leg missing from the
-- request is skipped.
create or replace function @extschema@._shard_legs(request jsonb)
returns jsonb
as $func$
declare
    settings record;
    bm25 @extschema@.bm25query;
    k integer := (request ->> 'k')::integer;
    filter jsonb := nullif(request -> 'filter', 'null');
    result jsonb := '{}';
begin
    select s.text_search_config, s.bm25_k1, s.bm25_b into settings
    from @extschema@.hybrid_search_settings as s;
    if request ? 'dense' then
        result := result || pg_catalog.jsonb_build_object('dense', (
            select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(l.id, l.score) order by l.rank), '[]')
            from @extschema@.dense_search(
                (request ->> 'dense')::@extschema:vector@.vector, k, filter, (request ->> 'ef_search')::integer
            ) as l
        ));
    end if;
    if request ? 'sparse' then
        result := result || pg_catalog.jsonb_build_object('sparse', (
            select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(l.id, l.score) order by l.rank), '[]')
            from @extschema@.sparse_search((request ->> 'sparse')::@extschema:vector@.sparsevec, k, filter) as l
        ));
    end if;
    if request ? 'query' then
        select @extschema@._bm25query_statistics(
            pg_catalog.to_tsvector(settings.text_search_config, request ->> 'query'),
            settings.bm25_k1, settings.bm25_b,
            (request ->> 'documents')::bigint, (request ->> 'total_length')::double precision,
            coalesce(pg_catalog.array_agg(d.key order by d.key), '{}'),
            coalesce(pg_catalog.array_agg(d.value::bigint order by d.key), '{}')
        )
        into bm25
        from pg_catalog.jsonb_each_text(request -> 'dfs') as d;
        result := result || pg_catalog.jsonb_build_object('keyword', (
            select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(l.id, l.score) order by l.rank), '[]')
            from @extschema@._keyword_search_bm25query(
                bm25, k, filter,
                case when request ? 'match' then
                    pg_catalog.websearch_to_tsquery(settings.text_search_config, request ->> 'match')
                end
            ) as l
        ));
    end if;
    return result;
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _shard_documents
-- On a shard: [[id, content, metadata], ...] of the ids it holds (with
-- tenant, a metadata filter, of those it matches).
create or replace function @extschema@._shard_documents(ids bigint[], tenant jsonb)
returns jsonb
as $func$
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(d.id, d.content, d.metadata)), '[]')
    from @extschema@.documents as d
    where d.id = any(ids) and (tenant is null or d.metadata operator(pg_catalog.@>) tenant);
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;
