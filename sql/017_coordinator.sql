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
-- _coordinator_tenant
-- The tenant (a value of the shard key) member's searches are restricted
-- to, or NULL when row-level security on the routing table does not apply
-- to member (superuser, BYPASSRLS, the table's owner unless it forces row
-- security, or no row security on the table), decided as PostgreSQL
-- decides it for a SELECT by member. The tenant is the one declared for
-- member or a role it is a member of (hybrid_search_coordinator_tenants,
-- whose policies reach member the same way). A role under row-level
-- security with no declaration, or declarations of several tenants, is
-- refused: the shards know nothing of the coordinator's policies, so
-- searching on its behalf without a tenant would return every tenant's rows.
create or replace function @extschema@._coordinator_tenant(caller text, member name)
returns text
as $func$
declare
    restricted boolean;
    tenants text[];
begin
    select
        t.relrowsecurity
        and not (r.rolsuper or r.rolbypassrls)
        and (t.relforcerowsecurity or not pg_catalog.pg_has_role(member, t.relowner, 'USAGE'))
    into restricted
    from @extschema@.hybrid_search_coordinator as c
    inner join pg_catalog.pg_class as t on c.routing_table = t.oid
    cross join pg_catalog.pg_roles as r
    where r.rolname = member;
    if not coalesce(restricted, false) then
        return null;
    end if;
    select pg_catalog.array_agg(distinct d.tenant order by d.tenant) into tenants
    from @extschema@.hybrid_search_coordinator_tenants as d
    where pg_catalog.pg_has_role(member, d.role, 'MEMBER');
    if tenants is null then
        raise exception '%: row-level security on % applies to role % and no tenant is declared for it',
            caller, (select c.routing_table from @extschema@.hybrid_search_coordinator as c), member
        using
            errcode = 'insufficient_privilege',
            hint = 'the extension owner declares it: hybrid_search_coordinator_tenant(role, tenant)';
    end if;
    if pg_catalog.cardinality(tenants) > 1 then
        raise exception '%: role % is restricted to several tenants (%); a search serves one',
            caller, member, pg_catalog.array_to_string(tenants, ', ')
        using errcode = 'insufficient_privilege';
    end if;
    return tenants[1];
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _coordinator_fanout
-- On a coordinator: one round of a search on behalf of member (the
-- caller's current_user; the session's user must be able to act as it, as
-- SET ROLE requires), kind 'statistics' (request: query), 'legs' (the
-- _shard_legs request) or 'documents' (ids, filter). SECURITY DEFINER: the
-- shards are reached through the extension owner's user mappings and
-- dblink, which no other role needs or gets, and the round is confined
-- here, as the owner, to what member may read: SELECT on the routing
-- table, and under a declared tenant (_coordinator_tenant) that tenant's
-- shard and rows only, the tenant added to member's own filter (a filter
-- naming another tenant finds nothing). The BM25 statistics of a tenant
-- are those of its rows, as one node gives a role under row-level security
-- the visible rows' (unless the owner opted into the index's with
-- bm25_statistics 'index': then every shard's, as for anyone else). Other
-- roles' statistics come from every shard, or with
-- hybrid_search.shard_statistics 'routed' from the shards the filter
-- routes to.
create or replace function @extschema@._coordinator_fanout(
    caller text, member name, kind text, request jsonb
) returns table (shard text, payload jsonb)
as $func$
#variable_conflict use_column
declare
    coordinator record;
    tenant text;
    tenant_filter jsonb;
    filter jsonb := nullif(request -> 'filter', 'null');
    scope text := coalesce(pg_catalog.current_setting('hybrid_search.shard_statistics', true), '');
    shards text[];
    command text;
begin
    if member is null or not coalesce(pg_catalog.pg_has_role(session_user, member, 'MEMBER'), false) then
        raise exception '%: session user % cannot act as role %', caller, session_user, coalesce(member, 'NULL')
        using errcode = 'insufficient_privilege';
    end if;
    select * into coordinator from @extschema@.hybrid_search_coordinator;
    if not pg_catalog.has_table_privilege(member, coordinator.routing_table, 'SELECT') then
        raise exception '%: permission denied for table % to role %', caller, coordinator.routing_table, member
        using
            errcode = 'insufficient_privilege',
            hint = 'a search on a coordinator returns rows of its routing table: GRANT SELECT on it';
    end if;
    if scope not in ('', 'all', 'routed') then
        raise exception '%: hybrid_search.shard_statistics must be ''all'' or ''routed'', got %',
            caller, pg_catalog.quote_literal(scope)
        using errcode = 'invalid_parameter_value';
    end if;
    perform @extschema@._check_filter(caller, filter);
    tenant := @extschema@._coordinator_tenant(caller, member);
    if tenant is not null then
        tenant_filter := pg_catalog.jsonb_build_object(coordinator.shard_key, tenant);
        if filter ? coordinator.shard_key and filter -> coordinator.shard_key <> tenant_filter -> coordinator.shard_key then
            -- another tenant's rows: none of them is member's
            perform pg_catalog.set_config('hybrid_search.shards_queried', '', false);
            perform pg_catalog.set_config('hybrid_search.shards_missing', '', false);
            return;
        end if;
        filter := coalesce(filter, '{}') || tenant_filter;
    end if;
    shards := @extschema@._coordinator_route(filter);
    if kind = 'statistics' then
        if tenant is not null
            and (select s.bm25_statistics from @extschema@.hybrid_search_settings as s) <> 'index' then
            command := pg_catalog.format(
                'select %%1$I._shard_bm25_statistics(%L, %L)', request ->> 'query', tenant_filter
            );
        else
            command := pg_catalog.format('select %%1$I._shard_bm25_statistics(%L, null)', request ->> 'query');
            if scope <> 'routed' then
                shards := (select pg_catalog.array_agg(s.name order by s.remainder) from @extschema@.hybrid_search_shards as s);
            end if;
        end if;
    elsif kind = 'legs' then
        command := pg_catalog.format(
            'select %%1$I._shard_legs(%L)',
            request || pg_catalog.jsonb_build_object('filter', filter)
        );
    elsif kind = 'documents' then
        command := pg_catalog.format(
            'select %%1$I._shard_documents(%L, %L)',
            (select pg_catalog.array_agg(e::bigint) from pg_catalog.jsonb_array_elements_text(request -> 'ids') as e),
            tenant_filter
        );
    else
        raise exception '%: unknown round %', caller, coalesce(kind, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    return query select r.shard, r.payload from @extschema@._shards_run(caller, shards, command) as r;
end;
$func$
language plpgsql volatile parallel unsafe security definer rows 4
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _coordinator_legs
-- On a coordinator: each leg's k best rows over all the shards filter routes
-- to, ranked by score then id as one node ranks them. Exact: a row in the
-- global top k is in its shard's top k. The keyword leg takes two rounds:
-- the shards' BM25 statistics are added up first, then every shard scores
-- with the sums, so scores equal one node's on the same rows (which shards
-- give statistics, and the tenant a role is restricted to:
-- _coordinator_fanout). A NULL query, dense or sparse skips that leg;
-- match (keyword_search's, websearch syntax) restricts the keyword leg's
-- rows on every shard, as on one node (the statistics stay the corpus').
create or replace function @extschema@._coordinator_legs(
    caller text,
    query text,
    query_dense @extschema:vector@.vector,
    query_sparse @extschema:vector@.sparsevec,
    k integer,
    filter jsonb,
    ef_search integer,
    match text default null
) returns table (leg text, id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    request jsonb := pg_catalog.jsonb_build_object('k', k, 'filter', filter, 'ef_search', ef_search);
    statistics jsonb;
begin
    if query_dense is not null then
        request := request || pg_catalog.jsonb_build_object('dense', query_dense::text);
    end if;
    if query_sparse is not null then
        request := request || pg_catalog.jsonb_build_object('sparse', query_sparse::text);
    end if;
    if match is not null then
        request := request || pg_catalog.jsonb_build_object('match', match);
    end if;
    if query is not null then
        select pg_catalog.jsonb_agg(r.payload) into statistics
        from @extschema@._coordinator_fanout(
            caller, current_user, 'statistics', pg_catalog.jsonb_build_object('query', query, 'filter', filter)
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
            from @extschema@._coordinator_fanout(caller, current_user, 'legs', request) as r
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
-- routes to, all at once (a row on two shards once); for a role restricted
-- to a tenant, of its tenant's rows only (_coordinator_fanout).
create or replace function @extschema@._coordinator_documents(caller text, ids bigint[], filter jsonb)
returns table (id bigint, content text, metadata jsonb)
as $func$
    select distinct on ((e.value ->> 0)::bigint) (e.value ->> 0)::bigint, e.value ->> 1, e.value -> 2
    from @extschema@._coordinator_fanout(
        caller, current_user, 'documents', pg_catalog.jsonb_build_object('ids', ids, 'filter', filter)
    ) as r
    cross join pg_catalog.jsonb_array_elements(r.payload) as e
    where pg_catalog.cardinality(ids) > 0
    order by (e.value ->> 0)::bigint;
$func$
language sql volatile parallel unsafe security invoker rows 10
set search_path to pg_catalog, pg_temp
set jit to off;
