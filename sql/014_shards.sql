-------------------------------------------------------------------------------
-- Sharding (docs/sharding.md): a coordinator database routes writes to shard
-- servers through postgres_fdw (a hash-partitioned table whose partitions
-- are the shards' documents tables) and fans searches out to them through
-- dblink's asynchronous calls, all shards at once. Every shard is a complete
-- hybrid_search database; the _shard_* functions (040_shard_legs.sql) are what the
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

-------------------------------------------------------------------------------
-- hybrid_search_coordinator_tenants
-- On a coordinator sharded by a metadata key: the one value of it each role
-- is restricted to (hybrid_search_coordinator_tenant writes it, with the
-- matching policy on the routing table). Searches of a role under that
-- policy ask its tenant's shard only, for its tenant's rows only. Owner
-- only: the fan-out reads it as the owner, never through a setting a role
-- could change.
create table if not exists @extschema@.hybrid_search_coordinator_tenants (
    role regrole primary key,
    tenant text not null
);

comment on table @extschema@.hybrid_search_coordinator_tenants is
'on a coordinator: the tenant (shard key value) each role is restricted to';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_coordinator', '');
select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_shards', '');
select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_coordinator_tenants', '');

-------------------------------------------------------------------------------
-- _is_coordinator
-- Whether this database fans searches out to shards. Every search asks:
-- plpgsql keeps the plan (a sql function with a SET clause is planned at
-- every call).
create or replace function @extschema@._is_coordinator()
returns boolean
as $func$
begin
    return exists (select from @extschema@.hybrid_search_coordinator);
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;
