-------------------------------------------------------------------------------
-- hybrid_search_create_dense_index
-- (Re)creates documents_dense_idx. graph (the default) is a dense_flat index
-- with a graph (degree 2m, as HNSW's bottom layer; graph_build_ef
-- 2 ef_construction): an insert only appends the row's codes, VACUUM links
-- new rows into the graph, and the same index scores a filter's rows
-- exactly, so it replaces documents_dense_filter_idx (which the other methods
-- bring back). The others: pgvector's HNSW (m, ef_construction), which links
-- each row as it is written (a COPY with every index ran 6.5x slower with it
-- at 100,000 rows); HNSW over half-precision copies of the vectors
-- (hnsw_halfvec: half the index memory, results re-ranked at full
-- precision); IVFFlat (lists; build it after loading data, its centroids
-- come from the rows present); or none for exact scans.
-- hybrid_search_set_model() creates the default once documents.dense has
-- its dimensions.
create or replace function @extschema@.hybrid_search_create_dense_index(
    method text default 'graph',
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
    if method is null or method not in ('graph', 'hnsw', 'hnsw_halfvec', 'ivfflat', 'none') then
        raise exception
            'hybrid_search_create_dense_index: method must be graph, hnsw, hnsw_halfvec, ivfflat or none, got %',
            coalesce(pg_catalog.quote_literal(method), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if m is null or ef_construction is null or lists is null then
        raise exception 'hybrid_search_create_dense_index: m, ef_construction and lists must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    drop index if exists @extschema@.documents_dense_idx;
    if method = 'graph' then
        if m < 1 or m > 32 or ef_construction < 4 or ef_construction > 500 then
            raise exception
                'hybrid_search_create_dense_index: graph takes m from 1 to 32 and ef_construction from 4 to 500'
            using errcode = 'invalid_parameter_value';
        end if;
        drop index if exists @extschema@.documents_dense_filter_idx;
        execute pg_catalog.format(
            'create index documents_dense_idx on @extschema@.documents using dense_flat'
            ' (dense @extschema@.vector_cosine_ops, metadata @extschema@.jsonb_filter_ops)'
            ' with (graph_degree = %s, graph_build_ef = %s)', 2 * m, 2 * ef_construction
        );
        return method;
    end if;
    if pg_catalog.to_regclass('@extschema@.documents_dense_filter_idx') is null then
        create index documents_dense_filter_idx on @extschema@.documents
        using dense_flat (dense @extschema@.vector_cosine_ops, metadata @extschema@.jsonb_filter_ops);
    end if;
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
'(re)create the dense index on documents: graph (default), hnsw, hnsw_halfvec, ivfflat or none';
