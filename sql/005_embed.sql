-------------------------------------------------------------------------------
-- embed_dense
-- BGE-M3 dense embedding of one text, computed in this backend.
create or replace function @extschema@.embed_dense(content text)
returns @extschema:vector@.vector
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.embed_dense(plpy, content)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.embed_dense is
'BGE-M3 dense vector of content (NULL for NULL); text beyond max_length tokens is truncated';

-------------------------------------------------------------------------------
-- embed_sparse
-- BGE-M3 lexical weights of one text as a sparsevec (index = token id + 1).
create or replace function @extschema@.embed_sparse(content text)
returns @extschema:vector@.sparsevec
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.embed_sparse(plpy, content)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.embed_sparse is
'BGE-M3 lexical weights of content as sparsevec (index = token id + 1; NULL for NULL)';

-------------------------------------------------------------------------------
-- embed
-- Dense vector and lexical weights from a single forward pass.
create or replace function @extschema@.embed(
    content text,
    out dense @extschema:vector@.vector,
    out sparse @extschema:vector@.sparsevec
)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.embed(plpy, content)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.embed is
'dense and sparse BGE-M3 embeddings of content from one model call';

-------------------------------------------------------------------------------
-- embed_batch
-- Embeds many texts with one model call per batch_size texts; the rows come
-- back in input order (ord is the 1-based array position). NULL elements give
-- NULL vectors.
create or replace function @extschema@.embed_batch(contents text[])
returns table (
    ord integer,
    dense @extschema:vector@.vector,
    sparse @extschema:vector@.sparsevec
)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.embed_batch(plpy, contents)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.embed_batch is
'dense and sparse embeddings of many texts, one model call per batch_size texts, in input order';
