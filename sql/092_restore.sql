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
-- configuration (rows are restored before it), and rebuilds the sparse index
-- and its statistics. Returns what it did. Policies must be re-created by the
-- DBA (see README, Backups).
create function @extschema@.hybrid_search_restore()
returns setof text
as $func$
declare
    info record;
    sized boolean;
    fixed bigint;
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
    if pg_catalog.to_regclass('@extschema@.documents_dense_idx') is null then
        return next 'dense index ' || @extschema@.hybrid_search_create_dense_index() || ' created';
    end if;
    update @extschema@.documents as d
    set fts = pg_catalog.to_tsvector(s.text_search_config, d.content)
    from @extschema@.hybrid_search_settings as s
    where d.fts is distinct from pg_catalog.to_tsvector(s.text_search_config, d.content);
    get diagnostics fixed = row_count;
    if fixed > 0 then
        return next pg_catalog.format('fts rewritten for %s rows', fixed);
    end if;
    perform @extschema@.hybrid_search_refresh();
    return next 'sparse index and hybrid_search_token_stats rebuilt';
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_restore is
'after pg_restore: size the vector columns from the model (no re-embedding), re-create the indexes';
