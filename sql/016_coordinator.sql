-------------------------------------------------------------------------------
-- A coordinator's side of sharded search (014_shards.sql): routing, the
-- legs merged over the shards, the winners' rows.

-------------------------------------------------------------------------------
-- _coordinator_route
-- The shards a search under filter must ask: all of them, or, when the shard
-- key is a metadata key and filter names one value of it, the one shard that
-- value hashes to (the partition tuple routing puts its rows in).
create or replace function @extschema@._coordinator_route(filter jsonb)
returns text[]
as $func$
    select coalesce(pg_catalog.array_agg(s.name order by s.remainder), '{}')
    from @extschema@.hybrid_search_shards as s
    cross join @extschema@.hybrid_search_coordinator as c
    where
        c.shard_key is null
        or filter is null
        or pg_catalog.jsonb_typeof(filter -> c.shard_key) not in ('string', 'number', 'boolean')
        or coalesce(pg_catalog.jsonb_typeof(filter -> c.shard_key), 'null') = 'null'
        or pg_catalog.satisfies_hash_partition(
            c.routing_table::oid, s.modulus, s.remainder, filter ->> c.shard_key
        );
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _coordinator_legs
-- On a coordinator: each leg's k best rows over all the shards filter routes
-- to, ranked by score then id as one node ranks them. Exact: a row in the
-- global top k is in its shard's top k. The keyword leg takes two rounds:
-- the shards' BM25 statistics are added up first, then every shard scores
-- with the sums, so scores equal one node's on the same rows. The
-- statistics come from every shard, even for a search routed to one tenant's
-- shard (as one node's would), unless hybrid_search.shard_statistics is
-- 'routed': then a tenant's search asks its shard alone, with that shard's
-- statistics. A NULL query, dense or sparse skips that leg.
create or replace function @extschema@._coordinator_legs(
    caller text,
    query text,
    query_dense @extschema:vector@.vector,
    query_sparse @extschema:vector@.sparsevec,
    k integer,
    filter jsonb,
    ef_search integer
) returns table (leg text, id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    shards text[] := @extschema@._coordinator_route(filter);
    request jsonb := pg_catalog.jsonb_build_object('k', k, 'filter', filter, 'ef_search', ef_search);
    statistics jsonb;
    scope text := coalesce(pg_catalog.current_setting('hybrid_search.shard_statistics', true), '');
begin
    if scope not in ('', 'all', 'routed') then
        raise exception '%: hybrid_search.shard_statistics must be ''all'' or ''routed'', got %',
            caller, pg_catalog.quote_literal(scope)
        using errcode = 'invalid_parameter_value';
    end if;
    if query_dense is not null then
        request := request || pg_catalog.jsonb_build_object('dense', query_dense::text);
    end if;
    if query_sparse is not null then
        request := request || pg_catalog.jsonb_build_object('sparse', query_sparse::text);
    end if;
    if query is not null then
        select pg_catalog.jsonb_agg(r.payload) into statistics
        from @extschema@._shards_run(
            caller,
            case
                when scope = 'routed' then shards
                else (select pg_catalog.array_agg(s.name) from @extschema@.hybrid_search_shards as s)
            end,
            pg_catalog.format('select %%1$I._shard_bm25_statistics(%L)', query)
        ) as r;
        request := request || pg_catalog.jsonb_build_object(
            'query', query,
            'documents', (
                select coalesce(sum((p.value ->> 'documents')::bigint), 0)
                from pg_catalog.jsonb_array_elements(statistics) as p
            ),
            'total_length', (
                select coalesce(sum((p.value ->> 'total_length')::double precision), 0)
                from pg_catalog.jsonb_array_elements(statistics) as p
            ),
            'dfs', (
                select coalesce(pg_catalog.jsonb_object_agg(d.lexeme, d.df), '{}')
                from (
                    select e.key as lexeme, sum(e.value::bigint) as df
                    from pg_catalog.jsonb_array_elements(statistics) as p
                    cross join pg_catalog.jsonb_each_text(p.value -> 'dfs') as e
                    group by e.key
                ) as d
            )
        );
    end if;
    return query
    select m.leg, m.id, m.rank::integer, m.score
    from (
        select
            c.leg,
            c.id,
            c.score,
            row_number() over (partition by c.leg order by c.score desc, c.id) as rank
        from (
            -- a row on two shards (hybrid_search_coordinator_split copied it
            -- and its prune is to come) counts once
            select distinct on (l.key, (e.value ->> 0)::bigint)
                l.key as leg,
                (e.value ->> 0)::bigint as id,
                (e.value ->> 1)::double precision as score
            from @extschema@._shards_run(
                caller, shards, pg_catalog.format('select %%1$I._shard_legs(%L)', request)
            ) as r
            cross join pg_catalog.jsonb_each(r.payload) as l
            cross join pg_catalog.jsonb_array_elements(l.value) as e
            order by l.key, (e.value ->> 0)::bigint, (e.value ->> 1)::double precision desc
        ) as c
    ) as m
    where m.rank <= k
    order by m.leg, m.rank;
end;
$func$
language plpgsql volatile parallel unsafe security invoker rows 300
set search_path to pg_catalog, pg_temp
-- a few hundred rows; the default estimates would make it JIT-compile
set jit to off;

-------------------------------------------------------------------------------
-- _coordinator_documents
-- On a coordinator: id, content and metadata of ids, from the shards filter
-- routes to, all at once (a row on two shards once).
create or replace function @extschema@._coordinator_documents(caller text, ids bigint[], filter jsonb)
returns table (id bigint, content text, metadata jsonb)
as $func$
    select distinct on ((e.value ->> 0)::bigint) (e.value ->> 0)::bigint, e.value ->> 1, e.value -> 2
    from @extschema@._shards_run(
        caller, @extschema@._coordinator_route(filter),
        pg_catalog.format('select %%1$I._shard_documents(%L)', ids)
    ) as r
    cross join pg_catalog.jsonb_array_elements(r.payload) as e
    where pg_catalog.cardinality(ids) > 0
    order by (e.value ->> 0)::bigint;
$func$
language sql volatile parallel unsafe security invoker rows 10
set search_path to pg_catalog, pg_temp
set jit to off;
