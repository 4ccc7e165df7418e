-------------------------------------------------------------------------------
-- _dense_index_halfvec_dimensions
-- The dimensions of the halfvec expression in documents_dense_idx (the type
-- modifier of the index's column), or NULL when the dense index (if any) is
-- on the vector column itself. Every dense search asks: plpgsql keeps the
-- plan (a sql function with a SET clause is planned at every call), and the
-- catalog lookup is by pg_attribute's key (deparsing the index definition
-- cost 6x more).
create or replace function @extschema@._dense_index_halfvec_dimensions()
returns integer
as $func$
begin
    return (
        select a.atttypmod
        from pg_catalog.pg_attribute as a
        where
            a.attrelid = pg_catalog.to_regclass('@extschema@.documents_dense_idx')
            and a.attnum = 1
            and a.atttypid = '@extschema:vector@.halfvec'::pg_catalog.regtype
    );
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_create_dense_index
-- (Re)creates documents_dense_idx: HNSW (the default; m, ef_construction),
-- HNSW over half-precision copies of the vectors (hnsw_halfvec: half the
-- index memory, results re-ranked at full precision), IVFFlat (lists; build
-- it after loading data, its centroids come from the rows present), or none
-- for exact scans. hybrid_search_set_model()
-- creates the default once documents.dense has its dimensions.
create or replace function @extschema@.hybrid_search_create_dense_index(
    method text default 'hnsw',
    m integer default 16,
    ef_construction integer default 64,
    lists integer default 100
) returns text
as $func$
declare
    -- vector's type modifier is its number of dimensions (-1: none)
    dimensions integer := (
        select a.atttypmod from pg_catalog.pg_attribute as a
        where a.attrelid = '@extschema@.documents'::regclass and a.attname = 'dense'
    );
begin
    if method is null or method not in ('hnsw', 'hnsw_halfvec', 'ivfflat', 'none') then
        raise exception
            'hybrid_search_create_dense_index: method must be hnsw, hnsw_halfvec, ivfflat or none, got %',
            coalesce(pg_catalog.quote_literal(method), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if m is null or ef_construction is null or lists is null then
        raise exception 'hybrid_search_create_dense_index: m, ef_construction and lists must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    drop index if exists @extschema@.documents_dense_idx;
    if method = 'hnsw' then
        execute pg_catalog.format(
            'create index documents_dense_idx on @extschema@.documents'
            ' using hnsw (dense @extschema:vector@.vector_cosine_ops)'
            ' with (m = %s, ef_construction = %s)', m, ef_construction
        );
    elsif method = 'hnsw_halfvec' then
        if dimensions < 1 then
            raise exception 'hybrid_search_create_dense_index: documents.dense has no dimensions yet'
            using hint = 'call hybrid_search_set_model() first';
        end if;
        execute pg_catalog.format(
            'create index documents_dense_idx on @extschema@.documents using hnsw'
            ' ((dense::@extschema:vector@.halfvec(%s)) @extschema:vector@.halfvec_cosine_ops)'
            ' with (m = %s, ef_construction = %s)', dimensions, m, ef_construction
        );
    elsif method = 'ivfflat' then
        execute pg_catalog.format(
            'create index documents_dense_idx on @extschema@.documents'
            ' using ivfflat (dense @extschema:vector@.vector_cosine_ops) with (lists = %s)', lists
        );
    end if;
    return method;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_create_dense_index is
'(re)create the dense index on documents: hnsw (default), hnsw_halfvec, ivfflat or none';
