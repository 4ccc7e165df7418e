-------------------------------------------------------------------------------
-- hybrid_search_config
-- Server-side settings of the embedding model. A table rather than GUCs: any
-- role can SET a GUC, and a model path must not be chosen by any role. Only the
-- extension owner (a superuser) can write it. A NULL column means "default";
-- hybrid_search_settings shows the effective values. Kept by pg_dump.
create table if not exists @extschema@.hybrid_search_config (
    singleton boolean primary key default true check (singleton),
    model text check (model <> ''),
    device text check (device <> ''),
    dtype text check (dtype in ('auto', 'fp32', 'fp16', 'bf16', 'int8')),
    batch_size integer check (batch_size between 1 and 4096),
    max_length integer check (max_length between 8 and 8192),
    num_threads integer check (num_threads between 1 and 1024),
    text_search_config regconfig,
    python_venv text check (python_venv like '/%'),
    max_content_chars integer check (max_content_chars >= 1),
    embed_mode text check (embed_mode in ('sync', 'queued')),
    queue_max_attempts integer check (queue_max_attempts between 1 and 100),
    queue_retry_seconds integer check (queue_retry_seconds between 0 and 86400),
    dense_model text check (dense_model <> ''),
    sparse_model text check (sparse_model <> ''),
    bm25_k1 double precision check (bm25_k1 >= 0 and bm25_k1 < 'Infinity'),
    bm25_b double precision check (bm25_b between 0 and 1),
    colbert_store boolean,
    query_threads integer check (query_threads between 0 and 1024),
    query_cache_entries integer check (query_cache_entries between 0 and 100000000),
    pack_weights boolean,
    bm25_statistics text check (bm25_statistics in ('visible', 'index'))
);

comment on table @extschema@.hybrid_search_config is
'hybrid_search model settings (one row; NULL = default). Only the extension owner can change them.';
comment on column @extschema@.hybrid_search_config.model is
'local directory of a BGE-M3 model, or a Hugging Face hub id already in the server''s cache';
comment on column @extschema@.hybrid_search_config.python_venv is
'virtualenv holding torch, FlagEmbedding and the hybrid_search Python module';
comment on column @extschema@.hybrid_search_config.dtype is
'numbers the model computes in: auto (bf16 where the CPU has bf16 units, else fp32), fp32, bf16, '
'fp16 (GPUs), int8 (dynamic quantization)';
comment on column @extschema@.hybrid_search_config.query_threads is
'torch threads for embedding a query (0: the cores idle at that moment); num_threads is for writes';
comment on column @extschema@.hybrid_search_config.query_cache_entries is
'query embeddings kept in hybrid_search_query_cache, shared by the backends (0: no shared cache)';
comment on column @extschema@.hybrid_search_config.pack_weights is
'bf16 linear weights reordered once per backend for oneDNN: faster queries, the weights '
'(0.6 GB for BGE-M3) in each backend''s private memory instead of shared';
comment on column @extschema@.hybrid_search_config.bm25_statistics is
'BM25 statistics for a role under row-level security: visible (its rows, counted per query; '
'the default) or index (the whole index''s: fast, but tells it how many rows hold a word)';
comment on column @extschema@.hybrid_search_config.max_content_chars is
'longer documents are refused with an error (tokenizing huge texts costs a backend gigabytes)';
comment on column @extschema@.hybrid_search_config.embed_mode is
'sync: writes embed in the writing transaction; queued: writes enqueue, hybrid_search_worker embeds';
comment on column @extschema@.hybrid_search_config.queue_max_attempts is
'failed queued documents are retried this many times, then kept in hybrid_search_errors';
comment on column @extschema@.hybrid_search_config.queue_retry_seconds is
'first retry delay of a failed queued document; it doubles with every attempt (at most 1 hour)';
comment on column @extschema@.hybrid_search_config.dense_model is
'model of the dense leg when it is not model: BGE-M3 or a sentence-transformers model directory';
comment on column @extschema@.hybrid_search_config.colbert_store is
'store BGE-M3 ColBERT vectors in documents.colbert on write (about 2 KB per token), for colbert_rerank';
comment on column @extschema@.hybrid_search_config.sparse_model is
'model of the sparse leg when it is not model: BGE-M3 or a SPLADE (masked language model) directory';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_config', '');

-------------------------------------------------------------------------------
-- hybrid_search_settings
-- The effective settings: stored values, or the defaults below.
create or replace view @extschema@.hybrid_search_settings as
select
    coalesce(c.model, 'BAAI/bge-m3') as model,
    coalesce(c.device, 'cpu') as device,
    coalesce(c.dtype, 'auto') as dtype,
    coalesce(c.batch_size, 32) as batch_size,
    coalesce(c.max_length, 512) as max_length,
    coalesce(c.num_threads, 1) as num_threads,
    coalesce(c.text_search_config, 'pg_catalog.english'::regconfig) as text_search_config,
    coalesce(c.python_venv, '/opt/hybrid_search/venv') as python_venv,
    coalesce(c.max_content_chars, 1000000) as max_content_chars,
    coalesce(c.embed_mode, 'sync') as embed_mode,
    coalesce(c.queue_max_attempts, 5) as queue_max_attempts,
    coalesce(c.queue_retry_seconds, 10) as queue_retry_seconds,
    coalesce(c.dense_model, c.model, 'BAAI/bge-m3') as dense_model,
    coalesce(c.sparse_model, c.model, 'BAAI/bge-m3') as sparse_model,
    -- what documents.model records: one name when one model makes both vectors
    case
        when coalesce(c.dense_model, c.model, 'BAAI/bge-m3') = coalesce(c.sparse_model, c.model, 'BAAI/bge-m3')
            then coalesce(c.dense_model, c.model, 'BAAI/bge-m3')
        else
            'dense=' || coalesce(c.dense_model, c.model, 'BAAI/bge-m3')
            || ' sparse=' || coalesce(c.sparse_model, c.model, 'BAAI/bge-m3')
    end as embedding_model,
    coalesce(c.bm25_k1, 1.2) as bm25_k1,
    coalesce(c.bm25_b, 0.75) as bm25_b,
    coalesce(c.colbert_store, false) as colbert_store,
    coalesce(c.query_threads, 0) as query_threads,
    coalesce(c.query_cache_entries, 10000) as query_cache_entries,
    coalesce(c.pack_weights, false) as pack_weights,
    coalesce(c.bm25_statistics, 'visible') as bm25_statistics
from (values (true)) as one_row (singleton)
left join @extschema@.hybrid_search_config as c on one_row.singleton = c.singleton;

comment on view @extschema@.hybrid_search_settings is
'effective hybrid_search settings (hybrid_search_config with defaults filled in)';
