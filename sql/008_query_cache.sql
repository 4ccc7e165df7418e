-------------------------------------------------------------------------------
-- hybrid_search_query_cache
-- Query embeddings shared by every backend: a backend that misses its own
-- cache looks here before running the model, and stores what it computed.
-- UNLOGGED (a cache: emptied by a crash, not replicated, not backed up).
-- key is a SHA-256 of the model, its number format, max_length and the query
-- text; dense and lexical are the float32 vector and the (token id, weight)
-- pairs. Each row belongs to the role that computed it, and row-level
-- security lets a role see and add only its own rows (the primary key leads
-- with the role, so not even a key conflict tells one role that another
-- searched a text): a role never learns another role's queries, nor whether
-- they were cached. The owner sees every row (hashes and vectors; the
-- lexical weights name the query's tokens).
-- entry numbers come from the miss counter, so the oldest entries are the
-- lowest numbers: past query_cache_entries, _query_cache_prune drops them.
-- (unlogged sequences: counting needs no WAL and gives a read-only search no
-- transaction id)
do $block$
begin
    if pg_catalog.to_regclass('@extschema@.hybrid_search_query_cache_hits') is null then
        create unlogged sequence @extschema@.hybrid_search_query_cache_hits;
    end if;
    if pg_catalog.to_regclass('@extschema@.hybrid_search_query_cache_misses') is null then
        create unlogged sequence @extschema@.hybrid_search_query_cache_misses;
    end if;
end;
$block$;

create unlogged table if not exists @extschema@.hybrid_search_query_cache (
    role_name name not null default current_user,
    key bytea not null,
    dense bytea not null,
    lexical bytea not null,
    entry bigint not null,
    created_at timestamptz not null default pg_catalog.now(),
    primary key (role_name, key)
);

create index if not exists hybrid_search_query_cache_entry_idx
on @extschema@.hybrid_search_query_cache (entry);

comment on table @extschema@.hybrid_search_query_cache is
'query embeddings shared by the backends (unlogged; a role sees only its own rows)';

alter table @extschema@.hybrid_search_query_cache enable row level security;

drop policy if exists own_rows on @extschema@.hybrid_search_query_cache;
create policy own_rows on @extschema@.hybrid_search_query_cache
using (role_name = current_user)
with check (role_name = current_user);

-------------------------------------------------------------------------------
-- hybrid_search_query_cache_stats
-- Hits and misses of the shared query cache since it was created or cleared
-- (read-only transactions and standbys neither use nor count it), and how
-- many entries it holds, over all roles: aggregates only.
create or replace view @extschema@.hybrid_search_query_cache_stats as
select
    h.hits,
    m.misses,
    case when h.hits + m.misses > 0 then h.hits::double precision / (h.hits + m.misses) end
        as hit_rate,
    (select count(*) from @extschema@.hybrid_search_query_cache) as entries,
    pg_catalog.pg_total_relation_size('@extschema@.hybrid_search_query_cache'::regclass) as bytes
from
    (
        select case when s.is_called then s.last_value else 0 end as hits
        from @extschema@.hybrid_search_query_cache_hits as s
    ) as h,
    (
        select case when s.is_called then s.last_value else 0 end as misses
        from @extschema@.hybrid_search_query_cache_misses as s
    ) as m;

comment on view @extschema@.hybrid_search_query_cache_stats is
'shared query cache: hits, misses, hit rate, entries and size (aggregates over all roles)';

-------------------------------------------------------------------------------
-- _query_cache_count
-- Counts a hit (or a miss) and returns the counter's new value: the owner's
-- right on the counters, so that no role holds any on a sequence.
create or replace function @extschema@._query_cache_count(hit boolean)
returns bigint
as $func$
    select case
        when hit then pg_catalog.nextval('@extschema@.hybrid_search_query_cache_hits')
        else pg_catalog.nextval('@extschema@.hybrid_search_query_cache_misses')
    end;
$func$
language sql volatile security definer
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._query_cache_count is
'count a hit or a miss of the shared query cache';

-------------------------------------------------------------------------------
-- _query_cache_put
-- Stores a query embedding for the calling role; returns its entry number,
-- or NULL when it was not stored: another transaction of the role is storing
-- the same key (the advisory lock makes this one skip rather than wait for
-- that transaction to end) or already has. Volatile, so that the embedding
-- functions (stable) can write through it.
create or replace function @extschema@._query_cache_put(
    cache_key bytea, dense bytea, lexical bytea, lock_key integer
) returns bigint
as $func$
    insert into @extschema@.hybrid_search_query_cache as c (key, dense, lexical, entry)
    select
        cache_key, dense, lexical,
        @extschema@._query_cache_count(false)
    where pg_catalog.pg_try_advisory_xact_lock(1752392049, lock_key)  -- 'hsqq'
    on conflict do nothing
    returning c.entry;
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._query_cache_put is
'store a query embedding in the shared query cache for the calling role';

-------------------------------------------------------------------------------
-- _query_cache_prune
-- Drops the oldest entries beyond query_cache_entries (by entry number, so
-- a few more may stay after inserts that lost a race). Runs with the owner's
-- rights (a role cannot delete others' rows itself) and returns nothing.
create or replace function @extschema@._query_cache_prune(newest bigint)
returns void
as $func$
    delete from @extschema@.hybrid_search_query_cache as c
    where c.entry <= newest - (select s.query_cache_entries from @extschema@.hybrid_search_settings as s);
$func$
language sql volatile security definer
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._query_cache_prune is
'drop the shared query cache''s entries older than the newest query_cache_entries';

-------------------------------------------------------------------------------
-- hybrid_search_query_cache_clear
-- Empties the shared query cache and resets its counters (owner only).
create or replace function @extschema@.hybrid_search_query_cache_clear()
returns void
as $func$
begin
    truncate @extschema@.hybrid_search_query_cache;
    perform pg_catalog.setval('@extschema@.hybrid_search_query_cache_hits', 1, false);
    perform pg_catalog.setval('@extschema@.hybrid_search_query_cache_misses', 1, false);
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_query_cache_clear is
'empty the shared query cache and reset its hit and miss counters';
