-------------------------------------------------------------------------------
-- hybrid_search_sparse_postings
-- The inverted index of documents.sparse: for every token, its postings in
-- blocks of at most 1024, ordered by weight (block 0 holds the heaviest), as
-- packed little-endian arrays (doc ids int4 or int8, weights float4) that
-- PL/Python scores with numpy. max_weight bounds a block's contribution, so a
-- query can stop reading a token early. Rebuilt by hybrid_search_refresh();
-- rows written since then are found through hybrid_search_sparse_changes.
-- Not dumped by pg_dump: until the first rebuild after a restore, the sparse
-- leg scans documents exactly.
create table if not exists @extschema@.hybrid_search_sparse_postings (
    token_id integer not null,
    block integer not null,
    max_weight real not null,
    doc_ids bytea not null,
    weights bytea not null,
    primary key (token_id, block) include (max_weight)
);

comment on table @extschema@.hybrid_search_sparse_postings is
'sparse inverted index: impact-ordered postings blocks per token (rebuilt by hybrid_search_refresh)';

-------------------------------------------------------------------------------
-- hybrid_search_sparse_segment
-- What the postings were built from: one row, replaced by every rebuild.
create table if not exists @extschema@.hybrid_search_sparse_segment (
    singleton boolean primary key default true check (singleton),
    built_at timestamptz not null,
    built_snapshot pg_snapshot not null,
    documents bigint not null,
    postings bigint not null,
    max_doc_id bigint not null,
    doc_id_bytes integer not null check (doc_id_bytes in (4, 8)),
    build_seconds double precision not null
);

comment on table @extschema@.hybrid_search_sparse_segment is
'when and from what snapshot hybrid_search_sparse_postings was built';

-------------------------------------------------------------------------------
-- hybrid_search_sparse_changes
-- Documents inserted, updated (sparse changed) or deleted since the postings
-- were built. Queries ignore these ids in the postings and score the live
-- ones exactly from documents, so the index never returns a stale or deleted
-- document and never misses a new one. xid is the writing transaction: a
-- rebuild forgets exactly the changes its snapshot saw.
create table if not exists @extschema@.hybrid_search_sparse_changes (
    doc_id bigint primary key,
    xid xid8 not null default pg_catalog.pg_current_xact_id()
);

comment on table @extschema@.hybrid_search_sparse_changes is
'documents changed since the sparse index was built (scored exactly until the next refresh)';

-------------------------------------------------------------------------------
-- _index_note_changes
-- Statement-level trigger of a derived index (the table-based sparse
-- index): remember inserted and deleted rows, and rows whose
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

create or replace trigger sparse_index_inserted
after insert on @extschema@.documents
referencing new table as new_rows
for each statement execute function @extschema@._index_note_changes(
    '@extschema@.hybrid_search_sparse_changes', 'sparse', '@extschema:vector@.sparsevec_send'
);

create or replace trigger sparse_index_updated
after update on @extschema@.documents
referencing old table as old_rows new table as new_rows
for each statement execute function @extschema@._index_note_changes(
    '@extschema@.hybrid_search_sparse_changes', 'sparse', '@extschema:vector@.sparsevec_send'
);

create or replace trigger sparse_index_deleted
after delete on @extschema@.documents
referencing old table as old_rows
for each statement execute function @extschema@._index_note_changes(
    '@extschema@.hybrid_search_sparse_changes', 'sparse', '@extschema:vector@.sparsevec_send'
);

create or replace trigger sparse_index_truncated
after truncate on @extschema@.documents
for each statement execute function @extschema@._index_truncated(
    '@extschema@.hybrid_search_sparse_postings',
    '@extschema@.hybrid_search_sparse_changes',
    '@extschema@.hybrid_search_sparse_segment'
);

-------------------------------------------------------------------------------
-- hybrid_search_rebuild_sparse_index
-- Rebuilds the postings from all documents in one snapshot, replaces the old
-- ones atomically (readers keep using them until commit) and forgets the
-- changes that snapshot saw. Concurrent rebuilds wait for each other.
create or replace function @extschema@.hybrid_search_rebuild_sparse_index(
    out documents bigint,
    out postings bigint,
    out seconds double precision
)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.rebuild_sparse_index(plpy)
$python$
language plpython3u volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_rebuild_sparse_index is
'rebuild the sparse inverted index from documents (readers are not blocked)';
