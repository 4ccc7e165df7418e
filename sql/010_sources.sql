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
-- _source_type_trusted
-- Whether values of this type reach text and jsonb only through code a
-- superuser installed: the type, and every type it is built on (domain base,
-- array element, composite attribute), is owned by a superuser, so no other
-- role can have created a cast of it (to text or json) that to_jsonb or ::text
-- would call. The copy triggers run as the owner: a value of any other type is
-- rendered by its output function (pg_catalog.format('%s')), which only a
-- superuser can write.
create or replace function @extschema@._source_type_trusted(typ regtype)
returns boolean
as $func$
    with recursive parts (oid) as (
        select typ::oid
        union
        select x.oid
        from parts as p
        inner join pg_catalog.pg_type as t on p.oid = t.oid
        cross join lateral (
            select t.typbasetype
            union all
            select t.typelem
            union all
            select a.atttypid from pg_catalog.pg_attribute as a
            where a.attrelid = t.typrelid and a.attnum > 0
        ) as x (oid)
        where x.oid <> 0
    )

    select coalesce(pg_catalog.bool_and(r.rolsuper), false)
    from parts as p
    inner join pg_catalog.pg_type as t on p.oid = t.oid
    inner join pg_catalog.pg_roles as r on t.typowner = r.oid;
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_value_sql
-- The expression for column col of row alias of an enabled table: as_text,
-- the key's text (source_key); else a metadata value. A type that is not
-- _source_type_trusted becomes its output function's text.
create or replace function @extschema@._source_value_sql(
    src @extschema@.hybrid_search_sources, col name, alias text, as_text boolean
) returns text
as $func$
    select case
        when not @extschema@._source_type_trusted(a.atttypid)
            then pg_catalog.format('pg_catalog.format(''%%s'', %s.%I)', alias, col)
        when as_text then pg_catalog.format('%s.%I::text', alias, col)
        else pg_catalog.format('%s.%I', alias, col)
    end
    from pg_catalog.pg_attribute as a
    where a.attrelid = src.source::regclass and a.attname = col and not a.attisdropped;
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_row_sql
-- The SELECT list that turns a row n of an enabled table into documents
-- columns (content, metadata, source, source_key); identifiers quoted with
-- format('%I'), the source name as a literal, values as _source_value_sql
-- renders them (metadata: metadata_columns, or every column but content;
-- jsonb_build_object takes at most 50 pairs, so chunks are concatenated).
create or replace function @extschema@._source_row_sql(src @extschema@.hybrid_search_sources)
returns text
as $func$
    select pg_catalog.format(
        'n.%1$I::text, %2$s || pg_catalog.jsonb_build_object(''_source'', %3$L), %3$L, %4$s',
        src.content_column,
        (
            select coalesce(pg_catalog.string_agg(chunk.sql, ' || '), '''{}''::jsonb')
            from (
                select
                    'pg_catalog.jsonb_build_object('
                    || pg_catalog.string_agg(
                        pg_catalog.format(
                            '%L, %s', c.name, @extschema@._source_value_sql(src, c.name, 'n', false)
                        ),
                        ', ' order by c.ord
                    )
                    || ')' as sql
                from (
                    select m.name, m.ord
                    from pg_catalog.unnest(src.metadata_columns) with ordinality as m (name, ord)
                    union all
                    select a.attname, a.attnum::bigint
                    from pg_catalog.pg_attribute as a
                    where
                        src.metadata_columns is null
                        and a.attrelid = src.source::regclass and a.attnum > 0 and not a.attisdropped
                        and a.attname <> src.content_column
                ) as c
                group by (c.ord - 1) / 50
            ) as chunk
        ),
        src.source,
        @extschema@._source_value_sql(src, src.key_column, 'n', true)
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
            ' and d.source_key in (select %s from old_rows as o)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'o', true)
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
            ' and d.source_key in (select %s from old_rows as o)'
            ' and d.source_key not in (select %s from new_rows as n where n.%I is not null)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'o', true),
            @extschema@._source_value_sql(src, src.key_column, 'n', true), src.content_column
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
            ' and d.source_key in (select %s from %s as o)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'o', true), tg_relid::regclass
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
