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
