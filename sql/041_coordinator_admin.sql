-------------------------------------------------------------------------------
-- A coordinator's administration (014_shards.sql): making one, checking its
-- shards, and adding a shard by splitting one.

-------------------------------------------------------------------------------
-- _shard_schema
-- The schema of hybrid_search in the database of server (a postgres_fdw
-- foreign server), or a clear error.
create or replace function @extschema@._shard_schema(caller text, server text)
returns text
as $func$
declare
    remote_schema text;
begin
    if not exists (
        select from pg_catalog.pg_foreign_server as s
        inner join pg_catalog.pg_foreign_data_wrapper as w on s.srvfdw = w.oid
        where s.srvname = server and w.fdwname = 'postgres_fdw'
    ) then
        raise exception '%: % is not a postgres_fdw foreign server', caller, coalesce(server, 'NULL')
        using errcode = 'undefined_object',
        hint = 'CREATE SERVER ... FOREIGN DATA WRAPPER postgres_fdw and CREATE USER MAPPING for it first';
    end if;
    begin
        select r.schema into remote_schema
        from hybrid_search_remote.dblink(
            server, 'select extnamespace::regnamespace::text from pg_extension where extname = ''hybrid_search'''
        ) as r (schema text);
    exception when others then
        raise exception '%: cannot reach shard %: %', caller, server, sqlerrm
        using errcode = sqlstate;
    end;
    if remote_schema is null then
        raise exception '%: shard % has no hybrid_search extension', caller, server
        using errcode = 'undefined_object';
    end if;
    return remote_schema;
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_coordinator_create
-- Makes this database the coordinator of shards: foreign servers of
-- postgres_fdw (a user mapping each) whose databases have hybrid_search,
-- listed in partition order. Creates routing_table (id from its own
-- sequence, content, metadata) hash-partitioned on id, or on
-- metadata ->> shard_key, with one foreign-table partition per shard (its
-- documents table): INSERT, COPY, UPDATE and DELETE on it land on the shard
-- owning the row, which embeds it. dblink (in schema hybrid_search_remote)
-- carries the searches. Returns the statements run. Owner only.
create or replace function @extschema@.hybrid_search_coordinator_create(
    shards text[],
    shard_key text default null,
    routing_table text default 'public.documents'
) returns setof text
as $func$
declare
    dblink_schema text := (
        select e.extnamespace::regnamespace::text from pg_catalog.pg_extension as e where e.extname = 'dblink'
    );
    shard text;
    remainder integer := 0;
    remote_schema text;
    target text[] := pg_catalog.parse_ident(routing_table);
    qualified text;
    statement text;
begin
    if exists (select from @extschema@.hybrid_search_coordinator) then
        raise exception 'hybrid_search_coordinator_create: this database is a coordinator already'
        using errcode = 'object_in_use';
    end if;
    if shards is null or pg_catalog.cardinality(shards) < 1
        or pg_catalog.cardinality(shards) <> (select count(distinct s) from pg_catalog.unnest(shards) as s) then
        raise exception 'hybrid_search_coordinator_create: shards must name one foreign server or more, each once'
        using errcode = 'invalid_parameter_value';
    end if;
    if shard_key is not null and pg_catalog.btrim(shard_key) = '' then
        raise exception 'hybrid_search_coordinator_create: shard_key must be a metadata key or NULL (id)'
        using errcode = 'invalid_parameter_value';
    end if;
    if pg_catalog.cardinality(target) <> 2 then
        raise exception 'hybrid_search_coordinator_create: routing_table must be schema-qualified, got %',
            routing_table
        using errcode = 'invalid_parameter_value';
    end if;
    qualified := pg_catalog.format('%I.%I', target[1], target[2]);
    if dblink_schema is null then
        create schema if not exists hybrid_search_remote;
        create extension dblink schema hybrid_search_remote;
    elsif dblink_schema <> 'hybrid_search_remote' then
        raise exception 'hybrid_search_coordinator_create: dblink is installed in schema %, expected hybrid_search_remote',
            dblink_schema
        using hint = 'ALTER EXTENSION dblink SET SCHEMA hybrid_search_remote';
    end if;
    foreach shard in array shards loop
        remote_schema := @extschema@._shard_schema('hybrid_search_coordinator_create', shard);
        insert into @extschema@.hybrid_search_shards (name, remote_schema, modulus, remainder)
        values (shard, remote_schema, pg_catalog.cardinality(shards), remainder);
        remainder := remainder + 1;
    end loop;
    statement := pg_catalog.format(
        'create sequence %I.%I as bigint', target[1], target[2] || '_id_seq'
    );
    execute statement;
    return next statement;
    statement := pg_catalog.format(
        'create table %s (id bigint not null default pg_catalog.nextval(%L), content text not null,'
        ' metadata jsonb not null default ''{}'') partition by hash (%s)',
        qualified, pg_catalog.format('%I.%I', target[1], target[2] || '_id_seq'),
        case when shard_key is null then 'id' else pg_catalog.format('(metadata ->> %L)', shard_key) end
    );
    execute statement;
    return next statement;
    for shard, remote_schema, remainder in
        select s.name, s.remote_schema, s.remainder from @extschema@.hybrid_search_shards as s order by s.remainder
    loop
        statement := pg_catalog.format(
            'create foreign table %I.%I partition of %s for values with (modulus %s, remainder %s)'
            ' server %I options (schema_name %L, table_name ''documents'')',
            target[1], target[2] || '_' || shard, qualified, pg_catalog.cardinality(shards), remainder,
            shard, remote_schema
        );
        execute statement;
        return next statement;
    end loop;
    insert into @extschema@.hybrid_search_coordinator (routing_table, shard_key)
    values (qualified::regclass, shard_key);
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_coordinator_create(text[], text, text) is
'make this database the coordinator of shards (postgres_fdw servers): routing table, foreign partitions, dblink';

-------------------------------------------------------------------------------
-- hybrid_search_coordinator_tenant
-- Restricts role to one tenant (a value of the coordinator's metadata shard
-- key): writes hybrid_search_coordinator_tenants and a policy on the
-- routing table, hybrid_search_tenant_<role>, for every command, to role
-- and its members: metadata @> {shard_key: tenant}, the filter the search
-- adds on the shards, so that a SELECT through the routing table and a
-- search see the same rows. Row-level security is enabled on the routing
-- table; a role under it without a declaration can no longer search
-- (_coordinator_tenant). tenant NULL removes role's declaration and
-- policy. Owner only: a role cannot change its own tenant.
create or replace function @extschema@.hybrid_search_coordinator_tenant(role regrole, tenant text)
returns void
as $func$
declare
    coordinator record;
    policy text;
begin
    select * into coordinator from @extschema@.hybrid_search_coordinator;
    if not found then
        raise exception 'hybrid_search_coordinator_tenant: this database is not a coordinator'
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    if coordinator.shard_key is null then
        raise exception 'hybrid_search_coordinator_tenant: the coordinator is sharded by id, not by a tenant key'
        using
            errcode = 'object_not_in_prerequisite_state',
            hint = 'a coordinator made with hybrid_search_coordinator_create(..., shard_key => ''tenant'')';
    end if;
    if role is null then
        raise exception 'hybrid_search_coordinator_tenant: role must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    policy := 'hybrid_search_tenant_' || (select r.rolname from pg_catalog.pg_roles as r where r.oid = role);
    if pg_catalog.octet_length(policy) > 63 then
        raise exception 'hybrid_search_coordinator_tenant: role name % is too long for its policy name %',
            role, policy
        using errcode = 'name_too_long';
    end if;
    execute pg_catalog.format('drop policy if exists %I on %s', policy, coordinator.routing_table);
    delete from @extschema@.hybrid_search_coordinator_tenants as t where t.role = $1;
    if tenant is null then
        return;
    end if;
    insert into @extschema@.hybrid_search_coordinator_tenants (role, tenant) values ($1, $2);
    execute pg_catalog.format('alter table %s enable row level security', coordinator.routing_table);
    execute pg_catalog.format(
        'create policy %I on %s for all to %s using (metadata operator(pg_catalog.@>) %L)'
        ' with check (metadata operator(pg_catalog.@>) %L)',
        policy, coordinator.routing_table, role,
        pg_catalog.jsonb_build_object(coordinator.shard_key, tenant),
        pg_catalog.jsonb_build_object(coordinator.shard_key, tenant)
    );
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_coordinator_tenant(regrole, text) is
'restrict role to one tenant of the coordinator: its searches ask that tenant''s shard for its rows only';

-------------------------------------------------------------------------------
-- _coordinator_check
-- On a coordinator (none elsewhere): every shard's hybrid_search_check(),
-- all shards at once, each check named '<shard>: <check>', and a shard that
-- cannot run it an error row naming it. Also checks that the shards embed
-- with the coordinator's model and text search configuration, without which
-- the query's vectors and lexemes would not match theirs. hybrid_search_check
-- adds these rows.
create or replace function @extschema@._coordinator_check()
returns table (check_name text, status text, detail text)
as $func$
#variable_conflict use_column
declare
    shard record;
    answered text[] := '{}';
    settings record;
begin
    if not @extschema@._is_coordinator() then
        return;
    end if;
    select s.embedding_model, s.text_search_config::text as config into settings
    from @extschema@.hybrid_search_settings as s;
    for shard in
        select r.shard, r.payload
        from @extschema@._shards_run(
            'hybrid_search_check',
            (select pg_catalog.array_agg(s.name order by s.remainder) from @extschema@.hybrid_search_shards as s),
            'select pg_catalog.jsonb_build_object(''checks'', (select pg_catalog.jsonb_agg(c)'
            ' from %1$I.hybrid_search_check() as c), ''model'', s.embedding_model,'
            ' ''config'', s.text_search_config::text) from %1$I.hybrid_search_settings as s'
        ) as r
    loop
        answered := answered || shard.shard;
        return query
        select shard.shard || ': ' || (c ->> 'check_name'), c ->> 'status', c ->> 'detail'
        from pg_catalog.jsonb_array_elements(shard.payload -> 'checks') as c;
        check_name := shard.shard || ': settings';
        if (shard.payload ->> 'model', shard.payload ->> 'config')
            is distinct from (settings.embedding_model, settings.config) then
            status := 'error';
            detail := pg_catalog.format(
                'the shard embeds with model %s and text search configuration %s, the coordinator with %s and %s',
                shard.payload ->> 'model', shard.payload ->> 'config', settings.embedding_model, settings.config
            );
        else
            status := 'ok';
            detail := 'same model and text search configuration as the coordinator';
        end if;
        return next;
    end loop;
    return query
    select s.name || ': reachable', 'error', 'the shard did not answer (see the WARNING)'
    from @extschema@.hybrid_search_shards as s
    where s.name <> all(answered);
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp
set "hybrid_search.shards_partial" to on
set jit to off;

-------------------------------------------------------------------------------
-- _coordinator_partition
-- The routing table's partition on shard, and the partition key's
-- expression over its rows as d.
create or replace function @extschema@._coordinator_partition(caller text, shard text)
returns table (partition regclass, key text)
as $func$
#variable_conflict use_column
begin
    return query
    select
        c.oid::regclass,
        case
            when h.shard_key is null then 'd.id'
            else pg_catalog.format('(d.metadata ->> %L)', h.shard_key)
        end
    from @extschema@.hybrid_search_coordinator as h
    inner join pg_catalog.pg_inherits as i on h.routing_table = i.inhparent
    inner join pg_catalog.pg_class as c on i.inhrelid = c.oid
    inner join pg_catalog.pg_foreign_table as f on c.oid = f.ftrelid
    inner join pg_catalog.pg_foreign_server as s on f.ftserver = s.oid
    where s.srvname = shard;
    if not found then
        raise exception '%: % is not a shard of this coordinator', caller, coalesce(shard, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_coordinator_split
-- Adds new_shard (a postgres_fdw server whose database has hybrid_search and
-- the same model) by giving it half of shard's hash partition: shard keeps
-- (2m, r) of its (m, r), new_shard gets (2m, r + m); PostgreSQL routes
-- partitions of moduli that divide one another side by side. The rows of
-- shard that now belong to new_shard are copied there (and embedded there)
-- in this transaction, and stay on shard until
-- hybrid_search_coordinator_prune(shard) deletes them: each step writes to
-- one shard, so a failure anywhere loses no row (searches count a row found
-- on two shards once). Returns the rows copied. Owner only.
create or replace function @extschema@.hybrid_search_coordinator_split(shard text, new_shard text)
returns bigint
as $func$
declare
    coordinator record;
    old record;
    part record;
    remote_schema text;
    target text[];
    copied bigint;
begin
    select * into coordinator from @extschema@.hybrid_search_coordinator;
    if not found then
        raise exception 'hybrid_search_coordinator_split: this database is not a coordinator'
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    select * into part from @extschema@._coordinator_partition('hybrid_search_coordinator_split', shard);
    select * into old from @extschema@.hybrid_search_shards as s where s.name = shard;
    if exists (select from @extschema@.hybrid_search_shards as s where s.name = new_shard) then
        raise exception 'hybrid_search_coordinator_split: % is a shard already', new_shard
        using errcode = 'invalid_parameter_value';
    end if;
    remote_schema := @extschema@._shard_schema('hybrid_search_coordinator_split', new_shard);
    target := pg_catalog.parse_ident(coordinator.routing_table::text);
    -- writers wait for the new layout (DETACH takes the table's exclusive lock)
    execute pg_catalog.format('alter table %s detach partition %s', coordinator.routing_table, part.partition);
    execute pg_catalog.format(
        'alter table %s attach partition %s for values with (modulus %s, remainder %s)',
        coordinator.routing_table, part.partition, old.modulus * 2, old.remainder
    );
    execute pg_catalog.format(
        'create foreign table %I.%I partition of %s for values with (modulus %s, remainder %s)'
        ' server %I options (schema_name %L, table_name ''documents'')',
        target[1], target[2] || '_' || new_shard, coordinator.routing_table,
        old.modulus * 2, old.remainder + old.modulus, new_shard, remote_schema
    );
    -- OFFSET 0: postgres_fdw would send satisfies_hash_partition, with this
    -- database's oid of the routing table, to the shard
    execute pg_catalog.format(
        'insert into %s (id, content, metadata) select r.id, r.content, r.metadata'
        ' from (select d.id, d.content, d.metadata, %s as key from %s as d offset 0) as r'
        ' where pg_catalog.satisfies_hash_partition(%s, %s, %s, r.key)',
        coordinator.routing_table, part.key, part.partition, coordinator.routing_table::oid,
        old.modulus * 2, old.remainder + old.modulus
    );
    get diagnostics copied = row_count;
    update @extschema@.hybrid_search_shards as s set modulus = old.modulus * 2 where s.name = shard;
    insert into @extschema@.hybrid_search_shards (name, remote_schema, modulus, remainder)
    values (new_shard, remote_schema, old.modulus * 2, old.remainder + old.modulus);
    return copied;
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_coordinator_split(text, text) is
'add new_shard with half of shard''s rows (copied; hybrid_search_coordinator_prune(shard) deletes the originals)';

-------------------------------------------------------------------------------
-- hybrid_search_coordinator_prune
-- Deletes from shard the rows its partition no longer holds (those
-- hybrid_search_coordinator_split copied to their new shard), in one
-- statement on that shard. Returns the rows deleted. Owner only.
create or replace function @extschema@.hybrid_search_coordinator_prune(shard text)
returns bigint
as $func$
declare
    part record;
    old record;
    moved bigint[];
    deleted bigint;
begin
    select * into part from @extschema@._coordinator_partition('hybrid_search_coordinator_prune', shard);
    select * into old from @extschema@.hybrid_search_shards as s where s.name = shard;
    -- the ids first, here (postgres_fdw would send satisfies_hash_partition to
    -- the shard), then one DELETE there
    execute pg_catalog.format(
        'select pg_catalog.array_agg(r.id) from (select d.id, %s as key from %s as d offset 0) as r'
        ' where not pg_catalog.satisfies_hash_partition(%s, %s, %s, r.key)',
        part.key, part.partition,
        (select c.routing_table::oid from @extschema@.hybrid_search_coordinator as c),
        old.modulus, old.remainder
    ) into moved;
    execute pg_catalog.format('delete from %s as d where d.id = any($1)', part.partition) using moved;
    get diagnostics deleted = row_count;
    return deleted;
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_coordinator_prune(text) is
'delete from shard the rows that belong to another shard now (after hybrid_search_coordinator_split)';
