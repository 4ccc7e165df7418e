-------------------------------------------------------------------------------
-- hybrid_search_sources
-- User tables whose rows are searched. Each enabled table keeps a copy of
-- every row's content (and chosen columns as metadata) in documents, kept in
-- step by statement triggers on the table, so one set of indexes, one sparse
-- index and one embedding queue serve every table. source is the table's
-- schema-qualified name as enabled; renaming the table or moving it to
-- another schema is refused (disable, rename, enable), dropping it removes
-- its copies (event triggers below).
create table if not exists @extschema@.hybrid_search_sources (
    source text primary key,
    key_column name not null,
    content_column name not null,
    metadata_columns name[],
    embed_mode text check (embed_mode in ('sync', 'queued')),
    enabled_at timestamptz not null default pg_catalog.now()
);

comment on table @extschema@.hybrid_search_sources is
'tables enabled with hybrid_search_enable: key and content columns, metadata columns, embed mode';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_sources', '');

-------------------------------------------------------------------------------
-- _source_row_sql
-- The SELECT list that turns a row n of an enabled table into documents
-- columns (content, metadata, source, source_key); identifiers quoted with
-- format('%I'), the source name as a literal.
create or replace function @extschema@._source_row_sql(src @extschema@.hybrid_search_sources)
returns text
as $func$
    select pg_catalog.format(
        'n.%1$I::text, %2$s || pg_catalog.jsonb_build_object(''_source'', %3$L), %3$L, n.%4$I::text',
        src.content_column,
        case
            when src.metadata_columns is null
                then pg_catalog.format('pg_catalog.to_jsonb(n) - %L', src.content_column)
            else (
                select
                    'pg_catalog.jsonb_build_object('
                    || pg_catalog.string_agg(pg_catalog.format('%L, n.%I', c.name, c.name), ', ')
                    || ')'
                from pg_catalog.unnest(src.metadata_columns) as c (name)
            )
        end,
        src.source,
        src.key_column
    );
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_changed
-- Statement trigger (INSERT, UPDATE, DELETE) on an enabled table, or on a
-- partition of one (then tg_argv[0] names the enabled table): upsert the
-- written rows into documents in one statement, so that their embedding is
-- batched (or queued) by the documents triggers; deleted rows, rows whose
-- content became NULL and the old keys of rows whose key changed leave
-- documents. Runs as the owner (SECURITY DEFINER, search_path pinned): the
-- copy is derived data like the indexes, kept exact whoever writes the table
-- (the table's own privileges and policies decide who may), and no writer
-- needs, or gets, a right on documents.source or source_key. Keys are
-- rendered as text under fixed settings (UTC, ISO dates...), never the
-- writer's: a key must give the same text in every session.
create or replace function @extschema@._source_changed()
returns trigger
as $func$
declare
    src @extschema@.hybrid_search_sources;
begin
    select * into strict src
    from @extschema@.hybrid_search_sources as s
    where s.source = coalesce(tg_argv[0], tg_relid::regclass::text);
    if tg_op = 'DELETE' then
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select o.%I::text from old_rows as o)',
            src.source, src.key_column
        );
        return null;
    end if;
    execute pg_catalog.format(
        'insert into @extschema@.documents as d (content, metadata, source, source_key)'
        ' select %s from new_rows as n where n.%I is not null'
        ' on conflict (source, source_key) do update'
        ' set content = excluded.content, metadata = excluded.metadata'
        ' where d.content is distinct from excluded.content'
        ' or d.metadata is distinct from excluded.metadata',
        @extschema@._source_row_sql(src), src.content_column
    );
    if tg_op = 'UPDATE' then
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select o.%I::text from old_rows as o)'
            ' and d.source_key not in (select n.%I::text from new_rows as n where n.%I is not null)',
            src.source, src.key_column, src.key_column, src.content_column
        );
    end if;
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

-------------------------------------------------------------------------------
-- _source_truncated
-- Statement trigger: TRUNCATE of an enabled table (AFTER) removes its rows
-- from documents; TRUNCATE of one of its partitions (BEFORE, tg_argv[0]
-- names the enabled table) removes the partition's rows. Owner's rights, as
-- _source_changed.
create or replace function @extschema@._source_truncated()
returns trigger
as $func$
declare
    src @extschema@.hybrid_search_sources;
begin
    select * into strict src
    from @extschema@.hybrid_search_sources as s
    where s.source = coalesce(tg_argv[0], tg_relid::regclass::text);
    if tg_nargs = 0 then
        delete from @extschema@.documents as d where d.source = src.source;
    else
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select o.%I::text from %s as o)',
            src.source, src.key_column, tg_relid::regclass
        );
    end if;
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

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
-- hybrid_search_enable
-- Make a table searchable: its single-column primary key identifies rows,
-- content_column (text) is embedded, metadata_columns (default: every other
-- column) become metadata for filters. Existing rows are queued for
-- hybrid_search_worker / `hybrid-search backfill`; later writes follow mode
-- ('sync' or 'queued'; NULL = hybrid_search_settings.embed_mode).
-- Returns the number of existing rows queued.
create or replace function @extschema@.hybrid_search_enable(
    source_table regclass,
    content_column name,
    mode text default 'queued',
    metadata_columns name[] default null
) returns bigint
as $func$
declare
    src @extschema@.hybrid_search_sources;
    keys name[];
    missing name;
    queued bigint;
begin
    if source_table is null or content_column is null then
        raise exception 'hybrid_search_enable: source_table and content_column are required'
        using errcode = 'invalid_parameter_value';
    end if;
    if mode is not null and mode not in ('sync', 'queued') then
        raise exception 'hybrid_search_enable: mode must be ''sync'', ''queued'' or NULL, got %', mode
        using errcode = 'invalid_parameter_value';
    end if;
    if (select c.relkind from pg_catalog.pg_class as c where c.oid = source_table) not in ('r', 'p') then
        raise exception 'hybrid_search_enable: % is not a table', source_table
        using errcode = 'wrong_object_type';
    end if;
    if exists (select from @extschema@.hybrid_search_sources as s where s.source = source_table::text) then
        raise exception 'hybrid_search_enable: % is already enabled', source_table
        using errcode = 'duplicate_object';
    end if;
    select array_agg(a.attname) into keys
    from pg_catalog.pg_index as i
    inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
    where i.indrelid = source_table and i.indisprimary;
    if cardinality(keys) is distinct from 1 then
        raise exception 'hybrid_search_enable: % needs a single-column primary key', source_table
        using errcode = 'invalid_table_definition';
    end if;
    if not exists (
        select from pg_catalog.pg_attribute as a
        where
            a.attrelid = source_table and a.attname = content_column and not a.attisdropped
            and a.atttypid in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
    ) then
        raise exception 'hybrid_search_enable: % has no text column %', source_table,
            pg_catalog.quote_ident(content_column)
        using errcode = 'undefined_column';
    end if;
    select c.name into missing
    from pg_catalog.unnest(metadata_columns) as c (name)
    where not exists (
        select from pg_catalog.pg_attribute as a
        where a.attrelid = source_table and a.attname = c.name and a.attnum > 0 and not a.attisdropped
    )
    limit 1;
    if missing is not null then
        raise exception 'hybrid_search_enable: % has no column %', source_table,
            pg_catalog.quote_ident(missing)
        using errcode = 'undefined_column';
    end if;

    if (select c.relpersistence from pg_catalog.pg_class as c where c.oid = source_table) = 't' then
        raise exception 'hybrid_search_enable: % is a temporary table (its copies would outlive it)',
            source_table
        using errcode = 'wrong_object_type';
    end if;
    if exists (
        select from @extschema@.hybrid_search_sources as s
        where
            s.source in (select a.relid::text from pg_catalog.pg_partition_ancestors(source_table) as a)
            or s.source in (select t.relid::text from pg_catalog.pg_partition_tree(source_table) as t)
    ) then
        raise exception 'hybrid_search_enable: a partition or partitioned table containing % is enabled already',
            source_table
        using errcode = 'duplicate_object';
    end if;

    insert into @extschema@.hybrid_search_sources as s (
        source, key_column, content_column, metadata_columns, embed_mode
    )
    values (source_table::text, keys[1], content_column, metadata_columns, mode)
    returning s.* into src;
    perform @extschema@._source_create_triggers(source_table, null);
    -- a write straight to a partition fires only the partition's triggers
    perform @extschema@._source_create_triggers(t.relid, src.source)
    from pg_catalog.pg_partition_tree(source_table) as t
    where t.relid <> source_table;
    -- existing rows are queued whatever the mode: enabling must not embed a
    -- large table inside this transaction
    perform pg_catalog.set_config('hybrid_search.queue_writes', 'on', true);
    execute pg_catalog.format(
        'insert into @extschema@.documents (content, metadata, source, source_key)'
        ' select %s from %s as n where n.%I is not null',
        @extschema@._source_row_sql(src), source_table, src.content_column
    );
    get diagnostics queued = row_count;
    perform pg_catalog.set_config('hybrid_search.queue_writes', 'off', true);
    return queued;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

comment on function @extschema@.hybrid_search_enable is
'make a table searchable (copy, triggers, existing rows queued); returns the number of rows queued';

-------------------------------------------------------------------------------
-- hybrid_search_disable
-- Undo hybrid_search_enable: drop its triggers and remove the table's rows
-- from documents (and the queue). The table itself is untouched. Returns the
-- number of documents removed.
create or replace function @extschema@.hybrid_search_disable(source_table regclass)
returns bigint
as $func$
declare
    removed bigint;
begin
    if not exists (select from @extschema@.hybrid_search_sources as s where s.source = source_table::text) then
        raise exception 'hybrid_search_disable: % is not enabled', source_table
        using errcode = 'undefined_object';
    end if;
    -- forgotten first: the event trigger then leaves the dropped triggers alone
    select @extschema@._source_forget(source_table::text) into removed;
    perform @extschema@._source_drop_triggers(source_table, 'hybrid_search');
    perform @extschema@._source_drop_triggers(g.tgrelid::regclass, 'hybrid_search_partition')
    from pg_catalog.pg_trigger as g
    where
        g.tgname = 'hybrid_search_partition_inserted'
        and g.tgfoid = '@extschema@._source_changed'::regproc
        and g.tgargs = pg_catalog.convert_to(source_table::text, 'UTF8') || '\x00'::bytea;
    return removed;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_disable is
'remove what hybrid_search_enable added to a table (triggers, its documents); returns documents removed';

-------------------------------------------------------------------------------
-- _source_filter
-- filter narrowed to one enabled table's documents (NULL source: unchanged).
create or replace function @extschema@._source_filter(source_table regclass, filter jsonb)
returns jsonb
as $func$
begin
    if source_table is null then
        return filter;
    end if;
    if not exists (select from @extschema@.hybrid_search_sources as s where s.source = source_table::text) then
        raise exception 'hybrid_search: % is not enabled; call hybrid_search_enable first', source_table
        using errcode = 'undefined_object';
    end if;
    return coalesce(filter, '{}'::jsonb) || pg_catalog.jsonb_build_object('_source', source_table::text);
end;
$func$
language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;
