-------------------------------------------------------------------------------
-- _index_note_changes
-- Statement-level trigger of the keyword index (030_keyword_index.sql), the
-- last index kept in tables: remember inserted and deleted rows, and rows whose
-- indexed column (tg_argv[1], compared in the binary form of its type's send
-- function tg_argv[2], since sparsevec's equality lives in pgvector's schema)
-- or id an UPDATE changed, in the index's change table (tg_argv[0]). The
-- arguments are fixed by the CREATE TRIGGERs, never user input. This and _index_truncated run as the extension owner
-- (SECURITY DEFINER, search_path pinned): a role allowed to write documents
-- needs no rights on the index tables, and the triggers only copy the ids of
-- rows that role has just written.
create or replace function @extschema@._index_note_changes()
returns trigger
as $func$
declare
    changes regclass := tg_argv[0]::regclass;
    send regproc := tg_argv[2]::regproc;
    upsert constant text := ' on conflict (doc_id) do update set xid = excluded.xid';
begin
    if tg_op = 'INSERT' then
        execute pg_catalog.format('insert into %s as c (doc_id) select n.id from new_rows as n', changes)
        || upsert;
    elsif tg_op = 'DELETE' then
        execute pg_catalog.format('insert into %s as c (doc_id) select o.id from old_rows as o', changes)
        || upsert;
    else
        execute pg_catalog.format(
            'insert into %s as c (doc_id)'
            ' select n.id from new_rows as n left join old_rows as o on n.id = o.id'
            ' where o.id is null or %3$s(n.%2$I) is distinct from %3$s(o.%2$I)'
            ' union'
            ' select o.id from old_rows as o left join new_rows as n on o.id = n.id'
            ' where n.id is null',
            changes, tg_argv[1], send
        ) || upsert;
    end if;
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _index_truncated
-- TRUNCATE documents empties a derived index (its tables: tg_argv; a
-- populated materialized view is refreshed instead) in the same transaction.
create or replace function @extschema@._index_truncated()
returns trigger
as $func$
declare
    index_table text;
begin
    foreach index_table in array tg_argv loop
        if (select c.relkind from pg_catalog.pg_class as c where c.oid = index_table::regclass) = 'm' then
            if (select c.relispopulated from pg_catalog.pg_class as c where c.oid = index_table::regclass) then
                execute pg_catalog.format('refresh materialized view %s', index_table::regclass);
            end if;
        else
            execute pg_catalog.format('delete from %s', index_table::regclass);
        end if;
    end loop;
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;
