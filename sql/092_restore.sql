-------------------------------------------------------------------------------
-- hybrid_search_documents_ddl
-- What pg_dump would lose: row-level security, its policies and the indexes
-- added to documents after CREATE EXTENSION (PostgreSQL dumps only the rows
-- of an extension's tables, never their definition). Kept current by the
-- event trigger below and dumped with the rows, so that
-- hybrid_search_restore() can replay it: a restore must not silently drop a
-- tenant policy.
create table if not exists @extschema@.hybrid_search_documents_ddl (
    ord integer primary key,
    statement text not null
);

comment on table @extschema@.hybrid_search_documents_ddl is
'row-level security, policies and added indexes of documents, replayed by hybrid_search_restore()';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_documents_ddl', '');

-------------------------------------------------------------------------------
-- _documents_ddl
-- The statements that re-create the current row-level security settings,
-- policies and added indexes of documents (not the indexes the
-- extension script creates), in replay order: indexes, then the switch,
-- then the policies.
create or replace function @extschema@._documents_ddl()
returns table (ord integer, statement text)
as $func$
    select
        (row_number() over (order by s.kind, s.name))::integer,
        s.statement
    from (
        select
            1 as kind,
            c.relname as name,
            pg_catalog.pg_get_indexdef(i.indexrelid) as statement
        from pg_catalog.pg_index as i
        inner join pg_catalog.pg_class as c on i.indexrelid = c.oid
        where
            i.indrelid = '@extschema@.documents'::regclass
            and c.relname not in (
                'documents_fts_idx', 'documents_metadata_idx', 'documents_model_idx', 'documents_sparse_idx',
                'documents_fts_bm25_idx', 'documents_dense_filter_idx'
            )
            -- constraints' indexes come with the table, from the extension script
            and not exists (
                select from pg_catalog.pg_constraint as k where k.conindid = i.indexrelid
            )
        union all
        select
            2,
            f.how,
            pg_catalog.format('alter table %s %s row level security', t.oid::regclass, f.how)
        from pg_catalog.pg_class as t
        cross join lateral (
            select 'enable' as how where t.relrowsecurity
            union all
            select 'force' where t.relforcerowsecurity
        ) as f
        where t.oid = '@extschema@.documents'::regclass
        union all
        select
            3,
            p.polname,
            pg_catalog.format(
                'create policy %I on %s as %s for %s to %s',
                p.polname, p.polrelid::regclass,
                case when p.polpermissive then 'permissive' else 'restrictive' end,
                case p.polcmd
                    when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                    when 'd' then 'delete' else 'all'
                end,
                (
                    select pg_catalog.string_agg(
                        case when r.role = 0 then 'public' else pg_catalog.quote_ident(a.rolname) end,
                        ', '
                    )
                    from pg_catalog.unnest(p.polroles) as r (role)
                    left join pg_catalog.pg_roles as a on r.role = a.oid
                )
            )
            || coalesce(' using (' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) || ')', '')
            || coalesce(
                ' with check (' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''
            )
        from pg_catalog.pg_policy as p
        where p.polrelid = '@extschema@.documents'::regclass
    ) as s;
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _remember_documents_ddl
-- Event trigger: after DDL that can change documents' policies, row-level
-- security or indexes, store what re-creates them. SECURITY DEFINER (search
-- path pinned) because a DROP INDEX or DROP POLICY by any role on any table
-- cannot tell whether it concerned documents, and must not fail for want of
-- a right on hybrid_search_documents_ddl; it takes no input and only
-- rewrites that table from the catalog.
create or replace function @extschema@._remember_documents_ddl()
returns event_trigger
as $func$
begin
    if exists (
        select from pg_catalog.pg_event_trigger_ddl_commands() as c
        where
            c.objid = '@extschema@.documents'::regclass
            or c.objid in (
                select i.indexrelid from pg_catalog.pg_index as i
                where i.indrelid = '@extschema@.documents'::regclass
            )
            or c.objid in (
                select p.oid from pg_catalog.pg_policy as p
                where p.polrelid = '@extschema@.documents'::regclass
            )
    ) or tg_tag in ('DROP POLICY', 'DROP INDEX') then
        delete from @extschema@.hybrid_search_documents_ddl;
        insert into @extschema@.hybrid_search_documents_ddl (ord, statement)
        select d.ord, d.statement from @extschema@._documents_ddl() as d;
    end if;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-- (the linter's postgres dialect cannot parse CREATE EVENT TRIGGER)
-- noqa: disable=all
drop event trigger if exists hybrid_search_remember_documents_ddl;
create event trigger hybrid_search_remember_documents_ddl
on ddl_command_end
when tag in (
    'CREATE POLICY', 'ALTER POLICY', 'DROP POLICY', 'ALTER TABLE', 'CREATE INDEX', 'DROP INDEX',
    'ALTER INDEX'
)
execute function @extschema@._remember_documents_ddl();
-- noqa: enable=all

-------------------------------------------------------------------------------
-- hybrid_search_restore
-- Finishes a pg_restore (or pg_upgrade-free copy) without re-embedding.
-- pg_dump keeps the rows of documents and hybrid_search_config but not what
-- was done to the extension's tables after CREATE EXTENSION: the sizes of
-- documents.dense and documents.sparse, the dense index, row-level security
-- and its policies, other indexes. The index tables are not dumped at all.
-- This sizes the columns from the configured model (the stored vectors are
-- checked against it, never recomputed), re-creates the default dense index
-- if there is none, brings fts in line with the restored text search
-- configuration (rows are restored before it), and rebuilds the keyword index
-- and the token statistics (documents_sparse_idx comes back with the table); replays the row-level security, policies and indexes
-- that hybrid_search_documents_ddl remembered. Returns what it did.
create or replace function @extschema@.hybrid_search_restore()
returns setof text
as $func$
declare
    info record;
    sized boolean;
    fixed bigint;
    stmt text;
    -- read before any DDL below: the event trigger rewrites the saved statements
    saved text[] := array(select d.statement from @extschema@.hybrid_search_documents_ddl as d order by d.ord);
    present text[] := array(select d.statement from @extschema@._documents_ddl() as d);
begin
    select * into info from @extschema@.hybrid_search_model_info();
    select bool_and(a.atttypmod > 0) into sized
    from pg_catalog.pg_attribute as a
    where a.attrelid = '@extschema@.documents'::regclass and a.attname in ('dense', 'sparse');
    if not sized then
        -- the cast checks every stored vector against the model's dimensions
        execute pg_catalog.format(
            'alter table @extschema@.documents '
            'alter column dense type @extschema:vector@.vector(%s), '
            'alter column sparse type @extschema:vector@.sparsevec(%s)',
            info.dense_dimensions, info.vocabulary_size
        );
        return next pg_catalog.format(
            'documents.dense and documents.sparse sized %s and %s from model %s',
            info.dense_dimensions, info.vocabulary_size, info.model
        );
    end if;
    -- the saved indexes (the dense one included), row-level security, policies
    foreach stmt in array saved loop
        if not stmt = any(present) then
            execute stmt;
            return next stmt;
        end if;
    end loop;
    if pg_catalog.to_regclass('@extschema@.documents_dense_idx') is null then
        return next 'dense index ' || @extschema@.hybrid_search_create_dense_index() || ' created';
    end if;
    -- this script brought documents_dense_filter_idx back beside a saved graph, which serves filters
    if @extschema@._dense_index_is_graph() and pg_catalog.to_regclass('@extschema@.documents_dense_filter_idx') is not null then
        drop index @extschema@.documents_dense_filter_idx;
        return next 'documents_dense_filter_idx dropped: the graph documents_dense_idx serves filters';
    end if;
    update @extschema@.documents as d
    set fts = pg_catalog.to_tsvector(s.text_search_config, d.content)
    from @extschema@.hybrid_search_settings as s
    where d.fts is distinct from pg_catalog.to_tsvector(s.text_search_config, d.content);
    get diagnostics fixed = row_count;
    if fixed > 0 then
        -- the old row versions stay in the BM25 index's statistics until VACUUM,
        -- which cannot run inside this function
        return next pg_catalog.format(
            'fts rewritten for %s rows: run VACUUM documents, so that BM25 statistics '
            'stop counting the old row versions', fixed
        );
    end if;
    perform @extschema@.hybrid_search_refresh();
    return next 'hybrid_search_token_stats refreshed';
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_restore is
'after pg_restore: size the vector columns from the model (no re-embedding), re-create the indexes';
