-------------------------------------------------------------------------------
-- Enabled tables (010_sources.sql) under DDL and hostile writes: the triggers
-- hybrid_search_enable creates, and what keeps the copies exact when
-- partitions come and go or the table is dropped; renames and column changes
-- that would break them are refused.

-------------------------------------------------------------------------------
-- _source_create_triggers
-- The statement triggers that keep documents in step with an enabled table
-- (enabled_as NULL) or with one of its partitions (enabled_as: the enabled
-- table, passed to the trigger functions; a write straight to a partition
-- fires only the partition's statement triggers).
create or replace function @extschema@._source_create_triggers(tbl regclass, enabled_as text)
returns void
as $func$
declare
    prefix text := case when enabled_as is null then 'hybrid_search' else 'hybrid_search_partition' end;
    args text := case when enabled_as is null then '' else pg_catalog.quote_literal(enabled_as) end;
begin
    execute pg_catalog.format(
        'create trigger %I after insert on %s referencing new table as new_rows'
        ' for each statement execute function @extschema@._source_changed(%s)',
        prefix || '_inserted', tbl, args
    );
    execute pg_catalog.format(
        'create trigger %I after update on %s referencing old table as old_rows new table as new_rows'
        ' for each statement execute function @extschema@._source_changed(%s)',
        prefix || '_updated', tbl, args
    );
    execute pg_catalog.format(
        'create trigger %I after delete on %s referencing old table as old_rows'
        ' for each statement execute function @extschema@._source_changed(%s)',
        prefix || '_deleted', tbl, args
    );
    -- a partition's rows must be read before it is emptied
    execute pg_catalog.format(
        'create trigger %I %s truncate on %s'
        ' for each statement execute function @extschema@._source_truncated(%s)',
        prefix || '_truncated', case when enabled_as is null then 'after' else 'before' end, tbl, args
    );
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_drop_triggers
-- Drop what _source_create_triggers created on a table (prefix
-- 'hybrid_search' or 'hybrid_search_partition').
create or replace function @extschema@._source_drop_triggers(tbl regclass, prefix text)
returns void
as $func$
declare
    kind text;
begin
    foreach kind in array array['_inserted', '_updated', '_deleted', '_truncated'] loop
        execute pg_catalog.format('drop trigger if exists %I on %s', prefix || kind, tbl);
    end loop;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_forget
-- An enabled table's copies leave documents, the queue and the errors, and
-- the table leaves hybrid_search_sources. Returns the documents removed.
create or replace function @extschema@._source_forget(source_name text)
returns bigint
as $func$
declare
    removed bigint;
begin
    delete from @extschema@.hybrid_search_queue as q
    where q.doc_id in (select d.id from @extschema@.documents as d where d.source = source_name);
    delete from @extschema@.hybrid_search_errors as e
    where e.doc_id in (select d.id from @extschema@.documents as d where d.source = source_name);
    delete from @extschema@.documents as d where d.source = source_name;
    get diagnostics removed = row_count;
    delete from @extschema@.hybrid_search_sources as s where s.source = source_name;
    return removed;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_reserved
-- Row trigger on documents: metadata "_source" (what source => filters on)
-- belongs to the copies of enabled tables; no other row may claim it, or a
-- writer could plant rows in another table's searches.
create or replace function @extschema@._source_reserved()
returns trigger
as $func$
begin
    if new.metadata ? '_source' and new.metadata ->> '_source' is distinct from new.source then
        raise exception 'documents: metadata key "_source" is reserved for rows copied from tables enabled with hybrid_search_enable'
        using errcode = 'check_violation';
    end if;
    return new;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_source_reserved
before insert or update of metadata, source on @extschema@.documents
for each row execute function @extschema@._source_reserved();

-------------------------------------------------------------------------------
-- _source_sync
-- Keep an enabled partitioned table's copy exact after its partitions
-- changed: new or attached partitions get the triggers, and the rows of an
-- attached one are copied (queued for embedding, like hybrid_search_enable's);
-- a detached table loses the triggers and its rows' copies; removed (a
-- partition was dropped, its rows are gone): copies of rows no longer in the
-- table leave documents (a pass over the table). Called by the event
-- triggers only (owner's rights, no input from the caller).
create or replace function @extschema@._source_sync(src @extschema@.hybrid_search_sources, removed boolean)
returns void
as $func$
declare
    part regclass;
    leaf boolean;
begin
    for part, leaf in
        select t.relid, t.isleaf from pg_catalog.pg_partition_tree(src.source::regclass) as t
        where
            t.relid <> src.source::regclass
            and not exists (
                select from pg_catalog.pg_trigger as g
                where g.tgrelid = t.relid and g.tgname = 'hybrid_search_partition_inserted'
            )
    loop
        perform @extschema@._source_create_triggers(part, src.source);
        if leaf then  -- the leaves hold the rows
            perform pg_catalog.set_config('hybrid_search.queue_writes', 'on', true);
            execute pg_catalog.format(
                'insert into @extschema@.documents as d (content, metadata, source, source_key)'
                ' select %s from %s as n where n.%I is not null'
                ' on conflict (source, source_key) do update'
                ' set content = excluded.content, metadata = excluded.metadata'
                ' where d.content is distinct from excluded.content'
                ' or d.metadata is distinct from excluded.metadata',
                @extschema@._source_row_sql(src), part, src.content_column
            );
            perform pg_catalog.set_config('hybrid_search.queue_writes', 'off', true);
        end if;
    end loop;
    for part in
        select g.tgrelid::regclass from pg_catalog.pg_trigger as g
        where
            g.tgname = 'hybrid_search_partition_inserted'
            and g.tgfoid = '@extschema@._source_changed'::regproc
            and g.tgargs = pg_catalog.convert_to(src.source, 'UTF8') || '\x00'::bytea
            and g.tgrelid not in (
                select t.relid from pg_catalog.pg_partition_tree(src.source::regclass) as t
            )
    loop
        perform @extschema@._source_drop_triggers(part, 'hybrid_search_partition');
        -- keys are unique across the partitions: these rows left the table
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select %s from %s as n)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'n', true), part
        );
    end loop;
    if removed then
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L and not exists'
            ' (select from %s as n where %s = d.source_key and n.%I is not null)',
            src.source, src.source, @extschema@._source_value_sql(src, src.key_column, 'n', true),
            src.content_column
        );
    end if;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

-------------------------------------------------------------------------------
-- _source_dropped
-- Event trigger (sql_drop): a dropped enabled table's copies leave documents
-- (and the queue), and it leaves hybrid_search_sources, so that nothing of it
-- stays searchable; a dropped partition's rows leave its enabled table's
-- copy. SECURITY DEFINER (search_path pinned): any owner of an enabled table
-- may drop it; the function takes no input but the catalog's list of
-- dropped objects.
create or replace function @extschema@._source_dropped()
returns event_trigger
as $func$
declare
    src @extschema@.hybrid_search_sources;
begin
    for src in
        select s.* from @extschema@.hybrid_search_sources as s
        where s.source in (
            select o.object_identity from pg_catalog.pg_event_trigger_dropped_objects() as o
            where o.object_type in ('table', 'partitioned table')
        )
    loop
        perform @extschema@._source_forget(src.source);
    end loop;
    if exists (
        select from pg_catalog.pg_event_trigger_dropped_objects() as o
        where o.object_type = 'trigger' and o.object_identity like 'hybrid\_search\_partition\_inserted on %'
    ) then
        for src in
            select s.* from @extschema@.hybrid_search_sources as s
            inner join pg_catalog.pg_class as c on pg_catalog.to_regclass(s.source) = c.oid
            where c.relkind = 'p'
        loop
            perform @extschema@._source_sync(src, true);
        end loop;
    end if;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_altered
-- Event trigger (ddl_command_end of CREATE TABLE, ALTER TABLE, ALTER SCHEMA):
-- an enabled table renamed or moved to another schema, or whose key,
-- content or metadata columns changed, would break its copy: refused (the
-- command rolls back) with what to do instead. Partitions created, attached
-- or detached: handled by _source_sync. Only tables the command touched (and
-- tables of schemas it touched) are looked at. SECURITY DEFINER as
-- _source_dropped.
create or replace function @extschema@._source_altered()
returns event_trigger
as $func$
declare
    touched oid[];
    moved regclass;
    src @extschema@.hybrid_search_sources;
    rel regclass;
    problem text;
begin
    touched := array(
        select c.objid from pg_catalog.pg_event_trigger_ddl_commands() as c
        where c.classid = 'pg_catalog.pg_class'::regclass
        union
        select r.oid from pg_catalog.pg_class as r
        where r.relnamespace in (
            select c.objid from pg_catalog.pg_event_trigger_ddl_commands() as c
            where c.classid = 'pg_catalog.pg_namespace'::regclass
        )
    );
    if cardinality(touched) = 0 then
        return;
    end if;
    select g.tgrelid::regclass into moved
    from pg_catalog.pg_trigger as g
    where
        g.tgrelid = any(touched)
        and g.tgname = 'hybrid_search_inserted'
        and g.tgfoid = '@extschema@._source_changed'::regproc
        and g.tgrelid::regclass::text not in (select s.source from @extschema@.hybrid_search_sources as s)
    limit 1;
    if moved is not null then
        raise exception 'hybrid_search: % is enabled for search under its former name; to rename it or move it to another schema, call hybrid_search_disable first (and hybrid_search_enable after)',
            moved
        using errcode = 'feature_not_supported';
    end if;
    for src in
        select s.* from @extschema@.hybrid_search_sources as s
        where pg_catalog.to_regclass(s.source) in (
            select t.id from pg_catalog.unnest(touched) as t (id)
            union
            select a.relid from pg_catalog.unnest(touched) as t (id)
            cross join lateral pg_catalog.pg_partition_ancestors(t.id) as a
        )
    loop
        rel := src.source::regclass;
        problem := case
            when (
                select array_agg(a.attname) from pg_catalog.pg_index as i
                inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
                where i.indrelid = rel and i.indisprimary
            ) is distinct from array[src.key_column] then pg_catalog.format('primary key (%I)', src.key_column)
            when not exists (
                select from pg_catalog.pg_attribute as a
                where
                    a.attrelid = rel and a.attname = src.content_column and not a.attisdropped
                    and a.atttypid in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
            ) then pg_catalog.format('text column %I', src.content_column)
            else (
                select pg_catalog.format('column %I', c.name)
                from pg_catalog.unnest(src.metadata_columns) as c (name)
                where not exists (
                    select from pg_catalog.pg_attribute as a
                    where a.attrelid = rel and a.attname = c.name and not a.attisdropped
                )
                limit 1
            )
        end;
        if problem is not null then
            raise exception 'hybrid_search: % is enabled for search with its %; to change that, call hybrid_search_disable first (and hybrid_search_enable after)',
                rel, problem
            using errcode = 'feature_not_supported';
        end if;
        if (select c.relkind from pg_catalog.pg_class as c where c.oid = rel) = 'p' then
            perform @extschema@._source_sync(src, false);
        end if;
    end loop;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-- (the linter's postgres dialect cannot parse CREATE EVENT TRIGGER)
-- noqa: disable=all
drop event trigger if exists hybrid_search_source_dropped;
create event trigger hybrid_search_source_dropped
on sql_drop
execute function @extschema@._source_dropped();

drop event trigger if exists hybrid_search_source_altered;
create event trigger hybrid_search_source_altered
on ddl_command_end
when tag in ('CREATE TABLE', 'ALTER TABLE', 'ALTER SCHEMA')
execute function @extschema@._source_altered();
-- noqa: enable=all

-- After ALTER EXTENSION UPDATE: partitions of tables enabled by an earlier
-- version get their triggers (and rows written straight to them are copied).
-- A fresh install has no enabled table.
do $block$
declare
    src @extschema@.hybrid_search_sources;
begin
    for src in
        select s.* from @extschema@.hybrid_search_sources as s
        inner join pg_catalog.pg_class as c on pg_catalog.to_regclass(s.source) = c.oid
        where c.relkind = 'p'
    loop
        perform @extschema@._source_sync(src, false);
    end loop;
end;
$block$;
