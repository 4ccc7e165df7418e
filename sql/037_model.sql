-------------------------------------------------------------------------------
-- hybrid_search_model_info
-- Loads the configured model in this backend (if not cached yet) and
-- describes it: what documents.dense and documents.sparse must hold, and the
-- number format it computes in (dtype 'auto' chooses from the CPU: see
-- numerics.py), why, and the directory its weights were loaded from.
create or replace function @extschema@.hybrid_search_model_info(
    out model text,
    out dense_dimensions integer,
    out vocabulary_size integer,
    out max_length integer,
    out load_seconds double precision,
    out dtype text,
    out dtype_reason text,
    out weights text
)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.model_info(plpy)
$python$
language plpython3u volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_model_info is
'load the configured model in this backend and report its shape, load time and number format (and why)';

-------------------------------------------------------------------------------
-- _prepare_model_weights
-- For dtype 'auto' (or bf16/fp16) on BGE-M3: writes the copy of the weights
-- converted to the chosen format beside the model directory, once, if it is
-- missing and the directory's parent is writable by the server, so that
-- backends share it memory-mapped. Returns the choice (dtype: reason).
create or replace function @extschema@._prepare_model_weights()
returns text
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.prepare_weights(plpy)
$python$
language plpython3u volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._prepare_model_weights is
'write the configured model''s weights converted to the automatically chosen dtype, once';

-------------------------------------------------------------------------------
-- hybrid_search_model_stats
-- What this backend has done with the model so far; loads nothing.
create or replace function @extschema@.hybrid_search_model_stats(
    out pid integer,
    out model text,
    out loaded boolean,
    out load_seconds double precision,
    out encode_calls bigint,
    out texts_encoded bigint,
    out encode_seconds double precision,
    out query_cache_hits bigint
)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.model_stats()
$python$
language plpython3u volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_model_stats is
'model calls, texts and time spent embedding in this backend (no load)';

-------------------------------------------------------------------------------
-- hybrid_search_set_model
-- Points the extension at a model and sizes documents.dense/sparse from it.
-- model makes both legs (BGE-M3); dense_model and/or sparse_model give a leg
-- its own encoder (a sentence-transformers or a SPLADE directory, or BGE-M3),
-- the other leg keeping model (or the current one). Rows embedded by other
-- models would make results meaningless, so they are refused unless
-- reembed => true, which re-embeds them in this transaction.
create or replace function @extschema@.hybrid_search_set_model(
    model text default null,
    reembed boolean default false,
    dense_model text default null,
    sparse_model text default null
) returns setof @extschema@.hybrid_search_settings
as $func$
declare
    info record;
    stale bigint;
    column_types text;
begin
    if pg_catalog.btrim(model) = '' or pg_catalog.btrim(dense_model) = ''
        or pg_catalog.btrim(sparse_model) = ''
        or num_nulls(model, dense_model, sparse_model) = 3 then
        raise exception 'hybrid_search_set_model: model (or dense_model/sparse_model) must be a directory or a hub id'
        using errcode = 'invalid_parameter_value';
    end if;
    -- a new model replaces both legs unless a leg is named too
    insert into @extschema@.hybrid_search_config as c (model, dense_model, sparse_model)
    values (model, dense_model, sparse_model)
    on conflict (singleton) do update set
        model = coalesce(excluded.model, c.model),
        dense_model = case
            when excluded.dense_model is not null then excluded.dense_model
            when excluded.model is not null then null
            else c.dense_model
        end,
        sparse_model = case
            when excluded.sparse_model is not null then excluded.sparse_model
            when excluded.model is not null then null
            else c.sparse_model
        end;

    perform @extschema@._prepare_model_weights();
    select * into info from @extschema@.hybrid_search_model_info();
    -- cached query embeddings of another model never match again: drop them
    truncate @extschema@.hybrid_search_query_cache;

    select count(*) into stale from @extschema@.documents as d
    where d.embedded_at is not null and d.model is distinct from info.model;
    if stale > 0 and not reembed then
        raise exception 'hybrid_search_set_model: % documents were embedded by another model', stale
        using hint = 'call hybrid_search_set_model(model, reembed => true) to re-embed them now';
    end if;

    select pg_catalog.string_agg(pg_catalog.format_type(a.atttypid, a.atttypmod), ',' order by a.attname)
    into column_types
    from pg_catalog.pg_attribute as a
    where a.attrelid = '@extschema@.documents'::regclass and a.attname in ('dense', 'sparse');
    if stale = 0 and column_types = pg_catalog.format(
        'vector(%s),sparsevec(%s)', info.dense_dimensions, info.vocabulary_size
    ) then
        return query select * from @extschema@.hybrid_search_settings;
        return;
    end if;

    -- the shape changes or rows must be re-embedded: clear, resize, embed again
    update @extschema@.documents
    set dense = null, sparse = null, colbert = null, model = null, embedded_at = null
    where embedded_at is not null;
    execute pg_catalog.format(
        'alter table @extschema@.documents '
        'alter column dense type @extschema:vector@.vector(%s), '
        'alter column sparse type @extschema:vector@.sparsevec(%s)',
        info.dense_dimensions, info.vocabulary_size
    );
    if to_regclass('@extschema@.documents_dense_idx') is null then
        perform @extschema@.hybrid_search_create_dense_index();
    end if;
    perform @extschema@.hybrid_search_embed_documents(
        array(select d.id from @extschema@.documents as d where d.embedded_at is null)
    );
    return query select * from @extschema@.hybrid_search_settings;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_set_model is
'use model, or dense_model/sparse_model per leg, and size documents.dense/sparse; reembed => true re-embeds';
