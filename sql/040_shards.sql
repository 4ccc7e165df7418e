-------------------------------------------------------------------------------
-- Sharding (docs/sharding.md): a coordinator database routes writes to shard
-- servers through postgres_fdw (a hash-partitioned table whose partitions
-- are the shards' documents tables) and fans searches out to them through
-- dblink's asynchronous calls, all shards at once. Every shard is a complete
-- hybrid_search database; the _shard_* functions below are what the
-- coordinator calls there. A database with no row in
-- hybrid_search_coordinator is a single node and none of this runs.

-------------------------------------------------------------------------------
-- hybrid_search_coordinator
-- One row on a coordinator: the table writers use (its partitions are the
-- shards' documents tables) and the shard key (NULL: id; else a metadata
-- key whose text value is hashed, so one tenant lives on one shard).
create table if not exists @extschema@.hybrid_search_coordinator (
    singleton boolean primary key default true check (singleton),
    routing_table regclass not null,
    shard_key text
);

comment on table @extschema@.hybrid_search_coordinator is
'on a coordinator: the routing table and the shard key (NULL = id, else a metadata key)';

-------------------------------------------------------------------------------
-- hybrid_search_shards
-- The coordinator's shards: the postgres_fdw foreign server (also dblink's
-- connection, through its user mapping), the hybrid_search schema there and
-- the hash partition the shard holds.
create table if not exists @extschema@.hybrid_search_shards (
    name text primary key,
    remote_schema text not null,
    modulus integer not null,
    remainder integer not null,
    unique (modulus, remainder)
);

comment on table @extschema@.hybrid_search_shards is
'on a coordinator: each shard''s foreign server, hybrid_search schema and hash partition';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_coordinator', '');
select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_shards', '');

-------------------------------------------------------------------------------
-- _is_coordinator
-- Whether this database fans searches out to shards.
create or replace function @extschema@._is_coordinator()
returns boolean
as $func$
    select exists (select from @extschema@.hybrid_search_coordinator);
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _shard_bm25_statistics
-- On a shard: the BM25 statistics keyword_search would use here for query
-- (rows, their total length, each query lexeme's df), for the coordinator
-- to add up over all shards (Elasticsearch's dfs_query_then_fetch).
create or replace function @extschema@._shard_bm25_statistics(query text)
returns jsonb
as $func$
declare
    config regconfig := (select s.text_search_config from @extschema@.hybrid_search_settings as s);
    statistics jsonb;
begin
    statistics := @extschema@._keyword_bm25query('hybrid_search', query, config)::text::jsonb;
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
-- k, filter, ef_search and the corpus-wide BM25 statistics (documents,
-- total_length, dfs). A leg missing from the request is skipped.
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
            from @extschema@._keyword_search_bm25query(bm25, k, filter, null) as l
        ));
    end if;
    return result;
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _shard_documents
-- On a shard: [[id, content, metadata], ...] of the ids it holds.
create or replace function @extschema@._shard_documents(ids bigint[])
returns jsonb
as $func$
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(d.id, d.content, d.metadata)), '[]')
    from @extschema@.documents as d
    where d.id = any(ids);
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;
