-------------------------------------------------------------------------------
-- _colbert_check_encoders
-- ColBERT vectors come from BGE-M3's ColBERT head: refuses (0A000) when the
-- configured encoders are anything else. Loads no model.
create or replace function @extschema@._colbert_check_encoders(caller text)
returns void
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.colbert_check_encoders(plpy, caller)
$python$
language plpython3u stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _colbert_query
-- Embeds the query with all three BGE-M3 heads in one forward pass into this
-- backend's query cache (so that hybrid_search's embed() and colbert_rerank()
-- find it there); returns the number of query vectors.
create or replace function @extschema@._colbert_query(query text)
returns integer
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.colbert_query(plpy, query)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- colbert_rerank
-- ColBERT MaxSim of the query against the given documents (those the caller
-- can see): the mean over the query's token vectors of the best dot product
-- with any of the document's token vectors (FlagEmbedding's colbert_score).
-- Document vectors come from documents.colbert where stored, else are
-- computed now from the content. BGE-M3 only. Best first, ties by id.
create or replace function @extschema@.colbert_rerank(query text, ids bigint[])
returns table (id bigint, rank integer, score double precision)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.colbert_rerank(plpy, query, ids)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.colbert_rerank(text, bigint[]) is
'ColBERT MaxSim of query against these documents (stored vectors, else computed now); BGE-M3 only';
