-- hybrid_search 0.2.0 as released (main at commit 496ea66): frozen, never edit; installed for upgrades from it
\echo Use "CREATE EXTENSION hybrid_search CASCADE" to load this file. \quit

-- source: sql/001_requirements.sql
-------------------------------------------------------------------------------
-- requirements
-- PostgreSQL 16 resolves @extschema:vector@ itself; on PostgreSQL 15 the build
-- writes pgvector's schema into this script (make VECTOR_SCHEMA=...). Either
-- way, fail early and clearly if pgvector is too old or lives elsewhere.
do $block$
declare
    vector_schema text;
    vector_version text;
begin
    select e.extnamespace::regnamespace::text, e.extversion
    into vector_schema, vector_version
    from pg_catalog.pg_extension as e
    where e.extname = 'vector';

    if vector_schema is distinct from '@extschema:vector@' then
        raise exception 'hybrid_search: pgvector is installed in schema %, but this build expects schema %',
            vector_schema, '@extschema:vector@'
        using hint = 'rebuild the extension with make -C extension install VECTOR_SCHEMA=<schema of vector>';
    end if;

    if pg_catalog.string_to_array(pg_catalog.split_part(vector_version, '-', 1), '.')::int[]
        < array[0, 7] then
        raise exception 'hybrid_search: pgvector % is too old; sparsevec needs pgvector 0.7 or later',
            vector_version
        using hint = 'run hybrid-search setup, or ALTER EXTENSION vector UPDATE';
    end if;
end;
$block$;

-- source: sql/002_config.sql
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
    query_cache_entries integer check (query_cache_entries between 0 and 100000000)
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
    coalesce(c.query_cache_entries, 10000) as query_cache_entries
from (values (true)) as one_row (singleton)
left join @extschema@.hybrid_search_config as c on one_row.singleton = c.singleton;

comment on view @extschema@.hybrid_search_settings is
'effective hybrid_search settings (hybrid_search_config with defaults filled in)';

-------------------------------------------------------------------------------
-- hybrid_search_configure
-- Change settings by name; arguments left NULL keep their current value. A
-- new text search configuration rewrites documents.fts, and new BM25
-- parameters rebuild the keyword index. colbert_store => true (BGE-M3 only)
-- makes writes store ColBERT vectors from now on (existing rows get them when
-- re-embedded; until then colbert_rerank computes theirs); false clears the
-- stored ones. Runs with the
-- caller's rights, so only the owner of hybrid_search_config (or a
-- superuser) gets past the INSERT.
create or replace function @extschema@.hybrid_search_configure(
    device text default null,
    dtype text default null,
    batch_size integer default null,
    max_length integer default null,
    num_threads integer default null,
    text_search_config regconfig default null,
    python_venv text default null,
    max_content_chars integer default null,
    embed_mode text default null,
    queue_max_attempts integer default null,
    queue_retry_seconds integer default null,
    bm25_k1 double precision default null,
    bm25_b double precision default null,
    colbert_store boolean default null,
    query_threads integer default null,
    query_cache_entries integer default null
) returns setof @extschema@.hybrid_search_settings
as $func$
declare
    before @extschema@.hybrid_search_settings;
    after @extschema@.hybrid_search_settings;
begin
    select * into before from @extschema@.hybrid_search_settings;
    insert into @extschema@.hybrid_search_config as c (
        device, dtype, batch_size, max_length, num_threads, text_search_config, python_venv,
        max_content_chars, embed_mode, queue_max_attempts, queue_retry_seconds, bm25_k1, bm25_b,
        colbert_store, query_threads, query_cache_entries
    )
    values (
        device, dtype, batch_size, max_length, num_threads, text_search_config, python_venv,
        max_content_chars, embed_mode, queue_max_attempts, queue_retry_seconds, bm25_k1, bm25_b,
        colbert_store, query_threads, query_cache_entries
    )
    on conflict (singleton) do update set
        device = coalesce(excluded.device, c.device),
        dtype = coalesce(excluded.dtype, c.dtype),
        batch_size = coalesce(excluded.batch_size, c.batch_size),
        max_length = coalesce(excluded.max_length, c.max_length),
        num_threads = coalesce(excluded.num_threads, c.num_threads),
        text_search_config = coalesce(excluded.text_search_config, c.text_search_config),
        python_venv = coalesce(excluded.python_venv, c.python_venv),
        max_content_chars = coalesce(excluded.max_content_chars, c.max_content_chars),
        embed_mode = coalesce(excluded.embed_mode, c.embed_mode),
        queue_max_attempts = coalesce(excluded.queue_max_attempts, c.queue_max_attempts),
        queue_retry_seconds = coalesce(excluded.queue_retry_seconds, c.queue_retry_seconds),
        bm25_k1 = coalesce(excluded.bm25_k1, c.bm25_k1),
        bm25_b = coalesce(excluded.bm25_b, c.bm25_b),
        colbert_store = coalesce(excluded.colbert_store, c.colbert_store),
        query_threads = coalesce(excluded.query_threads, c.query_threads),
        query_cache_entries = coalesce(excluded.query_cache_entries, c.query_cache_entries);
    select * into after from @extschema@.hybrid_search_settings;
    if after.colbert_store and not before.colbert_store then
        perform @extschema@._colbert_check_encoders('hybrid_search_configure');
    elsif before.colbert_store and not after.colbert_store then
        update @extschema@.documents as d set colbert = null where d.colbert is not null;
    end if;
    if after.text_search_config <> before.text_search_config then
        update @extschema@.documents as d
        set fts = pg_catalog.to_tsvector(after.text_search_config, d.content);
    end if;
    if (after.text_search_config, after.bm25_k1, after.bm25_b)
        is distinct from (before.text_search_config, before.bm25_k1, before.bm25_b)
        and exists (select from @extschema@.hybrid_search_keyword_segment) then
        perform @extschema@.hybrid_search_rebuild_keyword_index();
    end if;
    return query select * from @extschema@.hybrid_search_settings;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_configure is
'change model settings (NULL keeps the current value); the model itself is set with hybrid_search_set_model';

-- source: sql/003_python.sql
-------------------------------------------------------------------------------
-- hybrid_search_load_python
-- Puts the configured virtualenv (hybrid_search_settings.python_venv) at the
-- front of this backend's sys.path and imports our Python module. Every
-- PL/Python function of the extension calls it once per backend, so nothing
-- is installed into the system's site-packages. Refuses in parallel mode before
-- any SQL: PostgreSQL 15's PL/Python cannot start the subtransaction there and
-- its ERROR would corrupt the interpreter (plpython/hybrid_search/parallel.py).
create or replace function @extschema@.hybrid_search_load_python()
returns text
as $python$
    import ctypes, os, sys
    if ctypes.CDLL(None).IsInParallelMode() & 0xFF:  # see plpython/hybrid_search/parallel.py
        plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
    venv = plpy.execute('select python_venv from @extschema@.hybrid_search_settings')[0]["python_venv"]
    site = os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    if not os.path.isdir(site):
        plpy.error("hybrid_search: no Python virtualenv at %s (hybrid_search_settings.python_venv)" % venv,
                   hint="run `hybrid-search setup` as root, or hybrid_search_configure(python_venv => ...)")
    if site not in sys.path:
        sys.path.insert(0, site)
    import hybrid_search
    return hybrid_search.__file__
$python$
language plpython3u volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_load_python is
'load the hybrid_search Python module from the configured virtualenv (once per backend); returns its path';

-- source: sql/004_documents.sql
-------------------------------------------------------------------------------
-- documents
-- The searchable corpus. Writers set content and metadata; the triggers in
-- 008_embed_on_write.sql fill dense, sparse, fts, model and embedded_at in the
-- same transaction. dense and sparse get their dimensions from the model when
-- hybrid_search_set_model() is called (a literal 1024 would tie us to one model).
create table if not exists @extschema@.documents (
    id bigint generated by default as identity primary key,
    content text not null,
    metadata jsonb not null default '{}'::jsonb,
    dense @extschema:vector@.vector,
    sparse @extschema:vector@.sparsevec,
    fts tsvector,
    model text,
    embedded_at timestamptz,
    source text,
    source_key text,
    colbert bytea,
    unique (source, source_key)
);

comment on table @extschema@.documents is
'hybrid_search corpus: content is embedded on INSERT and on UPDATE of content';
comment on column @extschema@.documents.dense is
'BGE-M3 dense embedding (normalised, cosine = inner product)';
comment on column @extschema@.documents.sparse is
'BGE-M3 lexical weights; sparsevec index = token id + 1 (sparsevec is 1-based)';
comment on column @extschema@.documents.fts is
'to_tsvector(hybrid_search_settings.text_search_config, content)';
comment on column @extschema@.documents.model is
'model that produced dense and sparse';
comment on column @extschema@.documents.colbert is
'BGE-M3 ColBERT vectors if hybrid_search_settings.colbert_store: float16 little-endian, tokens x 1024, row-major';
comment on column @extschema@.documents.source is
'for rows copied from a table enabled with hybrid_search_enable: that table; NULL otherwise';
comment on column @extschema@.documents.source_key is
'the source row''s primary key, as text';

create index if not exists documents_fts_idx on @extschema@.documents using gin (fts);
create index if not exists documents_metadata_idx on @extschema@.documents
using gin (metadata jsonb_path_ops);

select pg_catalog.pg_extension_config_dump('@extschema@.documents', '');
select pg_catalog.pg_extension_config_dump('@extschema@.documents_id_seq', '');

-- source: sql/005_embed.sql
-------------------------------------------------------------------------------
-- embed_dense
-- BGE-M3 dense embedding of one text, computed in this backend.
create or replace function @extschema@.embed_dense(content text)
returns @extschema:vector@.vector
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.embed_batch(plpy, contents)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.embed_batch is
'dense and sparse embeddings of many texts, one model call per batch_size texts, in input order';

-- source: sql/006_sparse.sql
-------------------------------------------------------------------------------
-- sparse_entries
-- The (token id, weight) pairs of a sparsevec; token id = sparsevec index - 1.
create or replace function @extschema@.sparse_entries(sparse @extschema:vector@.sparsevec)
returns table (token_id integer, weight real)
as $func$
    select
        pg_catalog.split_part(entry, ':', 1)::integer - 1,
        pg_catalog.split_part(entry, ':', 2)::real
    from pg_catalog.unnest(pg_catalog.string_to_array(
        pg_catalog.btrim(pg_catalog.split_part(sparse::text, '/', 1), '{}'), ','
    )) as entry
    where entry <> '';
$func$
language sql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_entries is
'token ids (sparsevec index - 1) and weights of a sparse embedding';

-------------------------------------------------------------------------------
-- sparse_to_jsonb
-- A sparsevec as {"token_id": weight}, the lexical-weights format of
-- FlagEmbedding and of most other tools.
create or replace function @extschema@.sparse_to_jsonb(sparse @extschema:vector@.sparsevec)
returns jsonb
as $func$
    select coalesce(pg_catalog.jsonb_object_agg(e.token_id::text, e.weight), '{}'::jsonb)
    from @extschema@.sparse_entries(sparse) as e;
$func$
language sql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp
-- jsonb writes a real as float4out does: the caller's extra_float_digits would
-- round the weights (and make this IMMUTABLE function's result depend on it)
set extra_float_digits to 1;

comment on function @extschema@.sparse_to_jsonb is
'sparse embedding as a {"token_id": weight} object';

-------------------------------------------------------------------------------
-- sparse_dot (sparsevec)
-- Lexical matching score of two sparse embeddings: the sum over shared tokens
-- of the product of weights (FlagEmbedding's compute_lexical_matching_score).
create or replace function @extschema@.sparse_dot(
    a @extschema:vector@.sparsevec, b @extschema:vector@.sparsevec
)
returns double precision
as $func$
    select @extschema:vector@.inner_product(a, b);
$func$
language sql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_dot(
    @extschema:vector@.sparsevec, @extschema:vector@.sparsevec
) is
'lexical matching score: sum of weight products over shared tokens';

-------------------------------------------------------------------------------
-- sparse_dot (jsonb)
-- The same score for {"token_id": weight} objects; keys are matched as text.
-- Anything but an object of numbers is an error, never a silent 0.
create or replace function @extschema@.sparse_dot(a jsonb, b jsonb)
returns double precision
as $func$
declare
    bad text;
begin
    if pg_catalog.jsonb_typeof(a) <> 'object' or pg_catalog.jsonb_typeof(b) <> 'object' then
        raise exception 'sparse_dot: expected two JSON objects like {"17": 0.25}, got % and %',
            pg_catalog.jsonb_typeof(a), pg_catalog.jsonb_typeof(b)
        using errcode = 'invalid_parameter_value';
    end if;
    select x.key into bad
    from (
        select e.key, e.value from pg_catalog.jsonb_each(a) as e
        union all
        select e.key, e.value from pg_catalog.jsonb_each(b) as e
    ) as x
    where pg_catalog.jsonb_typeof(x.value) <> 'number'
    limit 1;
    if found then
        raise exception 'sparse_dot: the weight of token "%" is not a number', bad
        using errcode = 'invalid_parameter_value';
    end if;
    return coalesce((
        select sum(x.value::double precision * y.value::double precision)
        from pg_catalog.jsonb_each(a) as x
        inner join pg_catalog.jsonb_each(b) as y on x.key = y.key
    ), 0);
end;
$func$
language plpgsql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_dot(jsonb, jsonb) is
'lexical matching score of two {"token_id": weight} objects';

-- source: sql/007_colbert.sql
-------------------------------------------------------------------------------
-- _embed_for_storage
-- What the write path stores for many texts: embed_batch's (ord, dense,
-- sparse) plus BGE-M3's ColBERT vectors (float16 bytes, see documents.colbert)
-- when hybrid_search_settings.colbert_store is on; NULL otherwise, and then
-- they are not computed at all.
create or replace function @extschema@._embed_for_storage(contents text[])
returns table (
    ord integer,
    dense @extschema:vector@.vector,
    sparse @extschema:vector@.sparsevec,
    colbert bytea
)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.embed_for_storage(plpy, contents)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _colbert_check_encoders
-- ColBERT vectors come from BGE-M3's ColBERT head: refuses (0A000) when the
-- configured encoders are anything else. Loads no model.
create or replace function @extschema@._colbert_check_encoders(caller text)
returns void
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.colbert_rerank(plpy, query, ids)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.colbert_rerank(text, bigint[]) is
'ColBERT MaxSim of query against these documents (stored vectors, else computed now); BGE-M3 only';

-- source: sql/007_model.sql
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
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

-- source: sql/008_embed_on_write.sql
-------------------------------------------------------------------------------
-- _embed_and_store
-- One model call for these documents' contents, stored into the rows that
-- still hold exactly that content (a row rewritten meanwhile is left for
-- whoever wrote it). Returns the ids it stored.
create or replace function @extschema@._embed_and_store(ids bigint[], contents text[])
returns bigint[]
as $func$
    with stored as (
        update @extschema@.documents as d
        set
            dense = e.dense,
            sparse = e.sparse,
            colbert = e.colbert,
            model = s.embedding_model,
            embedded_at = pg_catalog.now()
        from unnest(ids, contents) with ordinality as b (id, content, ord)
        inner join @extschema@._embed_for_storage(contents) as e on b.ord = e.ord
        cross join @extschema@.hybrid_search_settings as s
        where d.id = b.id and d.content = b.content
        returning d.id
    )
    select coalesce(array_agg(stored.id), '{}') from stored;
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_embed_documents
-- Embeds the given documents now, in batches of
-- hybrid_search_settings.batch_size: one model call and one UPDATE per batch.
-- Returns the number of rows written.
create or replace function @extschema@.hybrid_search_embed_documents(ids bigint[])
returns bigint
as $func$
declare
    batch_ids bigint[];
    batch_contents text[];
    written bigint := 0;
begin
    if ids is null or cardinality(ids) = 0 then
        return 0;
    end if;
    for batch_ids, batch_contents in
        select array_agg(b.id order by b.id), array_agg(b.content order by b.id)
        from (
            select
                d.id,
                d.content,
                (row_number() over (order by d.id) - 1) / s.batch_size as batch
            from @extschema@.documents as d
            cross join @extschema@.hybrid_search_settings as s
            where d.id = any(ids)
        ) as b
        group by b.batch
        order by b.batch
    loop
        written := written + cardinality(@extschema@._embed_and_store(batch_ids, batch_contents));
    end loop;
    return written;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_embed_documents is
'embed (or re-embed) these documents now, one model call per batch_size rows';

-------------------------------------------------------------------------------
-- _embed_on_write
-- What the write triggers do with documents that need vectors: embed them in
-- this transaction ('sync') or queue them for hybrid_search_worker
-- ('queued'). The mode is the document's source table's (hybrid_search_enable),
-- else hybrid_search_settings.embed_mode; hybrid_search_enable queues a
-- table's existing rows whatever the mode.
create or replace function @extschema@._embed_on_write(ids bigint[])
returns void
as $func$
declare
    queued bigint[];
    now_ids bigint[];
begin
    if cardinality(ids) = 0 then
        return;
    end if;
    select
        array_agg(d.id) filter (where m.queued),
        array_agg(d.id) filter (where not m.queued)
    into queued, now_ids
    from @extschema@.documents as d
    left join @extschema@.hybrid_search_sources as src on d.source = src.source
    cross join @extschema@.hybrid_search_settings as s
    cross join lateral (
        select
            coalesce(pg_catalog.current_setting('hybrid_search.queue_writes', true), '') = 'on'
            or coalesce(src.embed_mode, s.embed_mode) = 'queued' as queued
    ) as m
    where d.id = any(ids);
    perform @extschema@.hybrid_search_enqueue(queued);
    perform @extschema@.hybrid_search_embed_documents(now_ids);
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _documents_fulltext
-- Row-level trigger: fts follows content (and hybrid_search_configure
-- rewrites it when the text search configuration changes). Stored ColBERT
-- vectors of the old content are dropped unless the same UPDATE sets new ones
-- (the embedding triggers store them again where colbert_store is on).
-- A tsvector holds at most 1 MB of lexemes and positions, whatever
-- max_content_chars allows: a content that makes a bigger one is refused with an
-- error naming both limits. Only a content of more than 128 kB (1 MB / 8) is
-- checked: a tsvector took at most 3.4 bytes per byte of text in every text
-- tried, and only those pay for the subtransaction that catches the error.
create or replace function @extschema@._documents_fulltext()
returns trigger
as $func$
declare
    config regconfig := (select s.text_search_config from @extschema@.hybrid_search_settings as s);
begin
    if coalesce(pg_catalog.octet_length(new.content), 0) <= 131072 then
        new.fts := pg_catalog.to_tsvector(config, new.content);
    else
        begin
            new.fts := pg_catalog.to_tsvector(config, new.content);
        exception when program_limit_exceeded then
            raise exception 'hybrid_search: a document of % characters makes a full-text vector (fts) over PostgreSQL''s 1 MB tsvector limit',
                pg_catalog.length(new.content)
            using
                errcode = 'program_limit_exceeded',
                detail = pg_catalog.format(
                    '%s; max_content_chars (%s) bounds what the model reads, not the tsvector',
                    sqlerrm, (select s.max_content_chars from @extschema@.hybrid_search_settings as s)
                ),
                hint = 'split the document into smaller ones';
        end;
    end if;
    if tg_op = 'UPDATE' and new.colbert is not null and new.content is distinct from old.content
        and new.colbert = old.colbert then
        new.colbert := null;
    end if;
    return new;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_fulltext
before insert or update of content on @extschema@.documents
for each row execute function @extschema@._documents_fulltext();

-------------------------------------------------------------------------------
-- _documents_embed_inserted
-- Statement-level trigger: every inserted (or COPYed) row, in batches. Rows
-- that arrive with both vectors (clients that embed elsewhere: only roles
-- that may write the vector columns) are kept as they are. This and
-- _documents_embed_updated run as the owner (SECURITY DEFINER, search_path
-- pinned): writers may set only content and metadata, may not touch the
-- queue, and the vectors are stored or queued for exactly the rows the
-- statement wrote (the transition table), never for ids a caller names.
create or replace function @extschema@._documents_embed_inserted()
returns trigger
as $func$
begin
    perform @extschema@._embed_on_write(array(
        select n.id from new_rows as n where n.dense is null or n.sparse is null
    ));
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _documents_embed_updated
-- Statement-level trigger: only rows whose content changed and whose vectors
-- the same UPDATE did not set. Metadata-only updates, and the UPDATE that
-- stores embeddings, find nothing to do. Runs as the owner (see above).
create or replace function @extschema@._documents_embed_updated()
returns trigger
as $func$
begin
    perform @extschema@._embed_on_write(array(
        select n.id
        from new_rows as n
        left join old_rows as o on n.id = o.id
        where
            o.id is null
            or (
                n.content is distinct from o.content
                -- compared as bytes: pgvector's = is not on our search_path
                and @extschema:vector@.vector_send(n.dense)
                is not distinct from @extschema:vector@.vector_send(o.dense)
                and @extschema:vector@.sparsevec_send(n.sparse)
                is not distinct from @extschema:vector@.sparsevec_send(o.sparse)
            )
    ));
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_embed_inserted
after insert on @extschema@.documents
referencing new table as new_rows
for each statement execute function @extschema@._documents_embed_inserted();

create or replace trigger documents_embed_updated
after update on @extschema@.documents
referencing old table as old_rows new table as new_rows
for each statement execute function @extschema@._documents_embed_updated();

-------------------------------------------------------------------------------
-- hybrid_search_reembed
-- Re-embeds every document, for example after changing max_length or model
-- settings.
create or replace function @extschema@.hybrid_search_reembed()
returns bigint
as $func$
    select @extschema@.hybrid_search_embed_documents(
        array(select d.id from @extschema@.documents as d)
    );
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_reembed is
're-embed all documents with the current settings; returns the number of rows';

-- source: sql/009_search_arguments.sql
-------------------------------------------------------------------------------
-- _check_search_arguments
-- The argument checks every search function shares, so that bad input gets
-- the same clear error everywhere instead of an empty or surprising result.
create or replace function @extschema@._check_search_arguments(
    caller text, k integer, filter jsonb
) returns void
as $func$
begin
    if k is null or k < 1 or k > 10000 then
        raise exception '%: k must be between 1 and 10000, got %', caller, coalesce(k::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if filter is not null and pg_catalog.jsonb_typeof(filter) <> 'object' then
        raise exception '%: filter must be a JSON object matched with @>, got a JSON %',
            caller, pg_catalog.jsonb_typeof(filter)
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_query_text
-- A search needs something to search for.
create or replace function @extschema@._check_query_text(caller text, query text)
returns void
as $func$
begin
    if query is null or pg_catalog.btrim(query) = '' then
        raise exception '%: query must be a non-empty text', caller
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_query_vector
-- The vector overloads need a vector.
create or replace function @extschema@._check_query_vector(caller text, missing boolean)
returns void
as $func$
begin
    if missing then
        raise exception '%: query vector must not be NULL', caller
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-- source: sql/010_dense_search.sql
-------------------------------------------------------------------------------
-- _dense_index_halfvec_dimensions
-- The dimensions of the halfvec expression in documents_dense_idx, or NULL
-- when the dense index (if any) is on the vector column itself.
create or replace function @extschema@._dense_index_halfvec_dimensions()
returns integer
as $func$
    select (pg_catalog.regexp_match(pg_catalog.pg_get_indexdef(i.indexrelid), 'halfvec\((\d+)\)'))[1]::integer
    from pg_catalog.pg_index as i
    where i.indexrelid = pg_catalog.to_regclass('@extschema@.documents_dense_idx');
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- dense_search (vector)
-- The k documents nearest to a dense query vector by cosine similarity
-- (score = 1 - cosine distance), restricted to metadata @> filter. Uses the
-- HNSW index when there is one: ef_search (raised to k) trades recall for
-- speed, and iterative index scans keep going until k documents pass the
-- filter. With a halfvec index (hybrid_search_create_dense_index
-- ('hnsw_halfvec')) the index orders by half-precision distance and the k
-- rows it returns are re-ranked at full precision. Sequential scans are
-- discouraged: the planner's cost model often
-- prefers one on tables of some ten thousand rows, at 50x the latency. The
-- settings are restored afterwards.
create or replace function @extschema@.dense_search(
    query_dense @extschema:vector@.vector,
    k integer default 10,
    filter jsonb default null,
    ef_search integer default 100
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    old_ef text := pg_catalog.current_setting('hnsw.ef_search', true);
    old_iterative text := pg_catalog.current_setting('hnsw.iterative_scan', true);
    old_seqscan text := pg_catalog.current_setting('enable_seqscan');
    half_dimensions integer := @extschema@._dense_index_halfvec_dimensions();
begin
    perform @extschema@._check_search_arguments('dense_search', k, filter);
    perform @extschema@._check_query_vector('dense_search', query_dense is null);
    if ef_search is null or ef_search < 1 or ef_search > 1000 then
        raise exception 'dense_search: ef_search must be between 1 and 1000, got %',
            coalesce(ef_search::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    perform pg_catalog.set_config('hnsw.ef_search', least(greatest(ef_search, k), 1000)::text, true);
    perform pg_catalog.set_config('hnsw.iterative_scan', 'relaxed_order', true);
    perform pg_catalog.set_config('enable_seqscan', 'off', true);
    if half_dimensions is null then
        return query
        select
            n.id,
            (row_number() over (order by n.distance, n.id))::integer,
            1 - n.distance
        from (
            -- ordered by distance alone so that the index can deliver the order
            select
                d.id,
                d.dense operator(@extschema:vector@.<=>) query_dense as distance
            from @extschema@.documents as d
            where d.dense is not null and (filter is null or d.metadata @> filter)
            order by d.dense operator(@extschema:vector@.<=>) query_dense
            limit k
        ) as n
        order by n.distance, n.id;
    else
        -- the same query, ordered by the index's halfvec expression
        return query execute pg_catalog.format(
            'select n.id, (row_number() over (order by n.distance, n.id))::integer, 1 - n.distance'
            ' from (select d.id, d.dense operator(@extschema:vector@.<=>) $1 as distance'
            '  from @extschema@.documents as d'
            '  where d.dense is not null and ($3::jsonb is null or d.metadata @> $3)'
            '  order by d.dense::@extschema:vector@.halfvec(%1$s)'
            '   operator(@extschema:vector@.<=>) $1::@extschema:vector@.halfvec(%1$s)'
            '  limit $2) as n'
            ' order by n.distance, n.id',
            half_dimensions
        ) using query_dense, k, filter;
    end if;
    perform pg_catalog.set_config('hnsw.ef_search', coalesce(old_ef, '40'), true);
    perform pg_catalog.set_config('hnsw.iterative_scan', coalesce(old_iterative, 'off'), true);
    perform pg_catalog.set_config('enable_seqscan', old_seqscan, true);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_search(@extschema:vector@.vector, integer, jsonb, integer) is
'k nearest documents to a dense query vector (cosine; HNSW with ef_search when indexed), optionally filtered';

-------------------------------------------------------------------------------
-- dense_search (text)
-- Embeds the query in this backend, then searches as above.
create or replace function @extschema@.dense_search(
    query text,
    k integer default 10,
    filter jsonb default null,
    ef_search integer default 100
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_query_text('dense_search', query);
    perform @extschema@._check_query_model('dense_search');
    perform @extschema@._check_search_arguments('dense_search', k, filter);
    return query
    select * from @extschema@.dense_search(@extschema@.embed_dense(query), k, filter, ef_search);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_search(text, integer, jsonb, integer) is
'k documents nearest to the query by BGE-M3 dense similarity, optionally filtered by metadata @> filter';

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

-- source: sql/011_sparse_index.sql
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
-- Statement-level trigger of a derived index (sparse here, keyword in
-- 030_keyword_index.sql): remember inserted and deleted rows, and rows whose
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

-- source: sql/012_sparse_search.sql
-------------------------------------------------------------------------------
-- sparse_search_scan
-- The sparse leg as a plain scan: the k documents with the highest lexical
-- matching score (sparse_dot), computed for every document. Exact and slow
-- on large tables; the reference the index is tested and measured against,
-- and what sparse_search uses until the index is first built.
create or replace function @extschema@.sparse_search_scan(
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('sparse_search_scan', k, filter);
    perform @extschema@._check_query_vector('sparse_search_scan', query_sparse is null);
    -- <#> is the negative inner product, so ascending order is best first
    return query
    select
        n.id,
        (row_number() over (order by n.negative_dot, n.id))::integer,
        -n.negative_dot
    from (
        select
            d.id,
            d.sparse operator(@extschema:vector@.<#>) query_sparse as negative_dot
        from @extschema@.documents as d
        where
            d.sparse is not null
            and (filter is null or d.metadata @> filter)
            and d.sparse operator(@extschema:vector@.<#>) query_sparse < 0
        order by negative_dot, d.id
        limit k
    ) as n
    order by n.negative_dot, n.id;
end;
$func$
language plpgsql stable parallel safe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_search_scan is
'k documents with the highest lexical matching score, by scanning every document (exact reference)';

-------------------------------------------------------------------------------
-- _sparse_search_index
-- (id, score) best first from the inverted index plus the documents changed
-- since it was built; see plpython/hybrid_search/sparse_index.py. STABLE, so
-- all its reads share one snapshot.
create or replace function @extschema@._sparse_search_index(
    query_sparse @extschema:vector@.sparsevec, k integer, filter jsonb
) returns table (id bigint, score double precision)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.sparse_index_search(plpy, query_sparse, k, filter)
$python$
language plpython3u stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- sparse_search (sparsevec)
-- The k documents with the highest lexical matching score (sparse_dot) for a
-- sparse query vector, exact; documents sharing no weighted token are left
-- out. Through documents_sparse_idx (sparse_inverted, 016) when it exists: an
-- index scan in <#> order, filter and row-level security checked row by row
-- as the scan goes on (so k rows come back whenever k visible matching rows
-- exist), ties at the k-th score all read (WITH TIES) and broken by id;
-- hybrid_search.sparse_positive_only ends the scan after the rows that share
-- a token with the query. Without that index, through the table-based one.
create or replace function @extschema@.sparse_search(
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('sparse_search', k, filter);
    perform @extschema@._check_query_vector('sparse_search', query_sparse is null);
    if exists (
        select from pg_catalog.pg_index as i
        where
            i.indexrelid = pg_catalog.to_regclass('@extschema@.documents_sparse_idx')
            and i.indisvalid
    ) then
        return query
        select
            n.id,
            (row_number() over (order by n.negative_dot, n.id))::integer,
            -n.negative_dot
        from (
            select
                d.id,
                d.sparse operator(@extschema:vector@.<#>) query_sparse as negative_dot
            from @extschema@.documents as d
            where d.sparse is not null and (filter is null or d.metadata @> filter)
            order by negative_dot
            fetch first k rows with ties
        ) as n
        where n.negative_dot < 0
        order by n.negative_dot, n.id
        limit k;
        return;
    end if;
    return query
    select
        r.id,
        (row_number() over (order by r.score desc, r.id))::integer,
        r.score
    from @extschema@._sparse_search_index(query_sparse, k, filter) as r
    order by r.score desc, r.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp
set "hybrid_search.sparse_positive_only" to on;

comment on function @extschema@.sparse_search(@extschema:vector@.sparsevec, integer, jsonb) is
'k documents with the highest lexical matching score for a sparse query vector (inverted index, exact)';

-------------------------------------------------------------------------------
-- sparse_search (text)
-- Embeds the query's lexical weights in this backend, then searches as above.
create or replace function @extschema@.sparse_search(
    query text,
    k integer default 10,
    filter jsonb default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_query_text('sparse_search', query);
    perform @extschema@._check_query_model('sparse_search');
    perform @extschema@._check_search_arguments('sparse_search', k, filter);
    return query
    select * from @extschema@.sparse_search(@extschema@.embed_sparse(query), k, filter);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_search(text, integer, jsonb) is
'k documents with the highest BGE-M3 lexical matching score for the query';

-- source: sql/013_keyword_search.sql
-------------------------------------------------------------------------------
-- keyword_search
-- Okapi BM25 over PostgreSQL's own lexemes: the query is turned into lexemes
-- with the text search configuration documents.fts is built with, and a
-- document matching any of them (OR) is scored
--   sum over query lexemes of idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))
-- with tf = the lexeme's positions in fts and len = all positions. Exact top
-- k through the keyword inverted index (030_keyword_index.sql); statistics
-- are those of the last hybrid_search_refresh(). match, in websearch_to_tsquery
-- syntax ("quoted phrase", or, -word), restricts the documents scored. A query
-- of stop words only finds nothing.
create or replace function @extschema@.keyword_search(
    query text,
    k integer default 10,
    filter jsonb default null,
    match text default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    config regconfig := (select s.text_search_config from @extschema@.hybrid_search_settings as s);
begin
    perform @extschema@._check_query_text('keyword_search', query);
    perform @extschema@._check_search_arguments('keyword_search', k, filter);
    return query
    select
        r.id,
        (row_number() over (order by r.score desc, r.id))::integer,
        r.score
    from @extschema@._keyword_search_bm25(
        config::text, query, k, filter,
        case when match is not null then pg_catalog.websearch_to_tsquery(config, match) end,
        false
    ) as r
    order by r.score desc, r.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.keyword_search is
'k best BM25 matches for the query''s lexemes (OR), optionally filtered by metadata and a websearch match';

-------------------------------------------------------------------------------
-- keyword_search_scan
-- The same ranking by reading every document's fts, with statistics computed
-- now: the exact reference for keyword_search, and what it does until the
-- keyword index is first built.
create or replace function @extschema@.keyword_search_scan(
    query text,
    k integer default 10,
    filter jsonb default null,
    match text default null
) returns table (id bigint, rank integer, score double precision)
as $func$
#variable_conflict use_column
declare
    config regconfig := (select s.text_search_config from @extschema@.hybrid_search_settings as s);
begin
    perform @extschema@._check_query_text('keyword_search_scan', query);
    perform @extschema@._check_search_arguments('keyword_search_scan', k, filter);
    return query
    select
        r.id,
        (row_number() over (order by r.score desc, r.id))::integer,
        r.score
    from @extschema@._keyword_search_bm25(
        config::text, query, k, filter,
        case when match is not null then pg_catalog.websearch_to_tsquery(config, match) end,
        true
    ) as r
    order by r.score desc, r.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.keyword_search_scan is
'BM25 by reading every document with current statistics (exact reference for keyword_search)';

-- source: sql/014_hybrid_search.sql
-------------------------------------------------------------------------------
-- hybrid_search_result
-- One fused result: the document, its fused score, and each leg's rank and
-- score (NULL where that leg did not return the document).
-- (a type has no CREATE OR REPLACE; upgrades change it with ALTER TYPE)
do $block$
begin
    if pg_catalog.to_regtype('@extschema@.hybrid_search_result') is null then
        create type @extschema@.hybrid_search_result as (
            id bigint,
            content text,
            metadata jsonb,
            score double precision,
            dense_rank integer,
            dense_score double precision,
            sparse_rank integer,
            sparse_score double precision,
            keyword_rank integer,
            keyword_score double precision,
            colbert_rank integer,
            colbert_score double precision
        );
    end if;
end;
$block$;

comment on type @extschema@.hybrid_search_result is
'a hybrid_search row: document, fused score, and each leg''s rank and score (colbert: re-ranking)';

-------------------------------------------------------------------------------
-- hybrid_search (query vectors)
-- Fuses the dense, sparse and keyword legs, each asked for
-- greatest(candidates, k) documents under the same metadata filter.
--   fusion 'weighted' (default): score = sum of weight * min-max normalised
--                      leg score, divided by the sum of weights (defaults
--                      dense 0.4, sparse 0.2 as in BGE-M3's compute_score;
--                      keyword 0.2). The default because a weak leg cannot
--                      pull it below the strong ones as much as equal-vote
--                      RRF (README, Measuring quality).
--   fusion 'rrf':      score = sum over legs of weight / (rrf_k + rank)
--                      (weights default to 1)
--   fusion 'raw':      score = sum of weight * raw leg score (BGE-M3's
--                      weights: dense 0.4, sparse 0.2; keyword 0, as BM25
--                      scores are unbounded)
-- A leg whose query is NULL (or whose weight is 0) is skipped. Ties are broken
-- by id, so the order is deterministic. source narrows the search to the rows
-- of one table enabled with hybrid_search_enable.
-- colbert_rerank => N (BGE-M3 only; off when NULL or 0): the fused top
-- greatest(N, k) are re-scored with ColBERT MaxSim (colbert_rerank()), a
-- fourth leg fused over those candidates with the same fusion: weighted adds
-- colbert_weight (default 0.4) times its min-max normalised score and divides
-- by the sum of weights, raw adds colbert_weight times MaxSim (with the raw
-- defaults this is BGE-M3's dense 0.4 + sparse 0.2 + colbert 0.4 'All'
-- score), rrf adds colbert_weight (default 1) / (rrf_k + its rank).
create or replace function @extschema@.hybrid_search(
    query text,
    query_dense @extschema:vector@.vector,
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    fusion text default 'weighted',
    dense_weight double precision default null,
    sparse_weight double precision default null,
    keyword_weight double precision default null,
    candidates integer default 100,
    filter jsonb default null,
    rrf_k integer default 60,
    ef_search integer default 100,
    source regclass default null,
    colbert_rerank integer default null,
    colbert_weight double precision default null
) returns setof @extschema@.hybrid_search_result
as $func$
#variable_conflict use_column
declare
    rrf boolean := fusion = 'rrf';
    w_dense double precision;
    w_sparse double precision;
    w_keyword double precision;
    w_colbert double precision;
    per_leg integer;
    rerank boolean := coalesce(colbert_rerank, 0) <> 0;
    shortlist integer := k;
    bad_weight text;
    bad_value double precision;
begin
    perform @extschema@._check_search_arguments('hybrid_search', k, filter);
    if fusion is null or fusion not in ('rrf', 'weighted', 'raw') then
        raise exception 'hybrid_search: unknown fusion %, expected ''rrf'', ''weighted'' or ''raw''',
            coalesce(pg_catalog.quote_literal(fusion), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if candidates is null or candidates < 1 or candidates > 10000 then
        raise exception 'hybrid_search: candidates must be between 1 and 10000, got %',
            coalesce(candidates::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if rrf_k is null or rrf_k < 0 or rrf_k > 1000000 then
        raise exception 'hybrid_search: rrf_k must be between 0 and 1000000, got %', coalesce(rrf_k::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    -- weights are relative; bounded, their sums and products never overflow
    select w.name, w.value into bad_weight, bad_value
    from (
        values
        ('dense_weight', dense_weight), ('sparse_weight', sparse_weight),
        ('keyword_weight', keyword_weight), ('colbert_weight', colbert_weight)
    ) as w (name, value)
    where w.value < 0 or w.value > 1e9 or w.value = 'NaN'
    limit 1;
    if bad_weight is not null then
        raise exception 'hybrid_search: % must be between 0 and 1e9 (or NULL for its default), got %',
            bad_weight, bad_value
        using errcode = 'invalid_parameter_value';
    end if;

    w_dense := case when query_dense is null then 0
        else coalesce(dense_weight, case when rrf then 1 else 0.4 end) end;
    w_sparse := case when query_sparse is null then 0
        else coalesce(sparse_weight, case when rrf then 1 else 0.2 end) end;
    w_keyword := case when query is null or pg_catalog.btrim(query) = '' then 0
        else coalesce(keyword_weight, case fusion when 'rrf' then 1 when 'raw' then 0 else 0.2 end) end;
    if w_dense + w_sparse + w_keyword = 0 then
        raise exception 'hybrid_search: nothing to search: every leg has weight 0 or no query'
        using errcode = 'invalid_parameter_value';
    end if;
    if rerank then
        if colbert_rerank < 1 or colbert_rerank > 1000 then
            raise exception 'hybrid_search: colbert_rerank must be between 1 and 1000 (or NULL), got %',
                colbert_rerank
            using errcode = 'invalid_parameter_value';
        end if;
        if query is null or pg_catalog.btrim(query) = '' then
            raise exception 'hybrid_search: colbert_rerank needs the query text'
            using errcode = 'invalid_parameter_value';
        end if;
        perform @extschema@._colbert_check_encoders('hybrid_search');
        shortlist := greatest(colbert_rerank, k);
    end if;
    w_colbert := case when rerank then coalesce(colbert_weight, case when rrf then 1 else 0.4 end) else 0 end;
    per_leg := greatest(candidates, k);
    filter := @extschema@._source_filter(source, filter);

    return query
    with dense as (
        select l.id, l.rank, l.score
        from @extschema@.dense_search(query_dense, per_leg, filter, ef_search) as l
        where w_dense > 0
    ),

    sparse as (
        select l.id, l.rank, l.score
        from @extschema@.sparse_search(query_sparse, per_leg, filter) as l
        where w_sparse > 0
    ),

    keyword as (
        select l.id, l.rank, l.score
        from @extschema@.keyword_search(query, per_leg, filter) as l
        where w_keyword > 0
    ),

    joined as (
        select
            coalesce(d.id, s.id, kw.id) as id,
            d.rank as d_rank,
            d.score as d_score,
            s.rank as s_rank,
            s.score as s_score,
            kw.rank as k_rank,
            kw.score as k_score,
            (d.score - min(d.score) over ()) / nullif(max(d.score) over () - min(d.score) over (), 0) as d_norm,
            (s.score - min(s.score) over ()) / nullif(max(s.score) over () - min(s.score) over (), 0) as s_norm,
            (kw.score - min(kw.score) over ()) / nullif(max(kw.score) over () - min(kw.score) over (), 0) as k_norm
        from dense as d
        full join sparse as s on d.id = s.id
        full join keyword as kw on coalesce(d.id, s.id) = kw.id
    ),

    fused as (
        select
            j.*,
            case
                when rrf then
                    coalesce(w_dense / (rrf_k + j.d_rank), 0)
                    + coalesce(w_sparse / (rrf_k + j.s_rank), 0)
                    + coalesce(w_keyword / (rrf_k + j.k_rank), 0)
                when fusion = 'raw' then
                    w_dense * coalesce(j.d_score, 0)
                    + w_sparse * coalesce(j.s_score, 0)
                    + w_keyword * coalesce(j.k_score, 0)
                else (
                    -- a leg whose candidates all score the same normalises to 1
                    w_dense * case when j.d_rank is null then 0 else coalesce(j.d_norm, 1) end
                    + w_sparse * case when j.s_rank is null then 0 else coalesce(j.s_norm, 1) end
                    + w_keyword * case when j.k_rank is null then 0 else coalesce(j.k_norm, 1) end
                ) / (w_dense + w_sparse + w_keyword)
            end as fused_score
        from joined as j
    ),

    -- only the winners are joined to documents (the planner cannot know
    -- how few rows the legs return and would otherwise scan the table)
    shortlisted as (
        select * from fused as f
        order by f.fused_score desc, f.id
        limit shortlist
    ),

    colbert as (
        select c.id, c.rank, c.score
        from @extschema@.colbert_rerank(query, array(select sl.id from shortlisted as sl)) as c
        where rerank
    ),

    reranked as (
        select
            sl.*,
            c.rank as c_rank,
            c.score as c_score,
            case
                when not rerank then sl.fused_score
                when rrf then sl.fused_score + coalesce(w_colbert / (rrf_k + c.rank), 0)
                when fusion = 'raw' then sl.fused_score + w_colbert * coalesce(c.score, 0)
                else (
                    sl.fused_score * (w_dense + w_sparse + w_keyword)
                    + w_colbert * case
                        when c.rank is null then 0
                        else coalesce(
                            (c.score - min(c.score) over ())
                            / nullif(max(c.score) over () - min(c.score) over (), 0),
                            1
                        )
                    end
                ) / (w_dense + w_sparse + w_keyword + w_colbert)
            end as final_score
        from shortlisted as sl
        left join colbert as c on sl.id = c.id
    ),

    best as (
        select * from reranked as r
        order by r.final_score desc, r.id
        limit k
    )

    select
        b.id,
        doc.content,
        doc.metadata,
        b.final_score,
        b.d_rank,
        b.d_score,
        b.s_rank,
        b.s_score,
        b.k_rank,
        b.k_score,
        b.c_rank,
        b.c_score
    from best as b
    inner join @extschema@.documents as doc on b.id = doc.id
    order by b.final_score desc, b.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search(
    text, @extschema:vector@.vector, @extschema:vector@.sparsevec,
    integer, text, double precision, double precision, double precision, integer, jsonb, integer, integer,
    regclass, integer, double precision
) is
'hybrid search with query vectors computed elsewhere (query text feeds the keyword leg and ColBERT re-ranking)';

-------------------------------------------------------------------------------
-- hybrid_search (text)
-- Embeds the query once (dense and sparse from one forward pass, and ColBERT
-- vectors in the same pass when colbert_rerank is asked for) and fuses the
-- legs as above.
create or replace function @extschema@.hybrid_search(
    query text,
    k integer default 10,
    fusion text default 'weighted',
    dense_weight double precision default null,
    sparse_weight double precision default null,
    keyword_weight double precision default null,
    candidates integer default 100,
    filter jsonb default null,
    rrf_k integer default 60,
    ef_search integer default 100,
    source regclass default null,
    colbert_rerank integer default null,
    colbert_weight double precision default null
) returns setof @extschema@.hybrid_search_result
as $func$
#variable_conflict use_column
declare
    q record;
begin
    perform @extschema@._check_query_text('hybrid_search', query);
    perform @extschema@._check_query_model('hybrid_search');
    perform @extschema@._check_search_arguments('hybrid_search', k, filter);
    if colbert_rerank > 0 then
        perform @extschema@._colbert_check_encoders('hybrid_search');
        perform @extschema@._colbert_query(query);  -- all three heads in one forward pass
    end if;
    select * into q from @extschema@.embed(query);
    return query
    select * from @extschema@.hybrid_search(
        query, q.dense, q.sparse,
        k => k, fusion => fusion,
        dense_weight => dense_weight, sparse_weight => sparse_weight,
        keyword_weight => keyword_weight,
        candidates => candidates, filter => filter, rrf_k => rrf_k, ef_search => ef_search,
        source => source, colbert_rerank => colbert_rerank, colbert_weight => colbert_weight
    );
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search(
    text, integer, text, double precision, double precision, double precision, integer, jsonb, integer,
    integer, regclass, integer, double precision
) is
'hybrid dense + sparse + full-text search for query: id, content, metadata, fused score and each leg''s rank and score';

-- source: sql/015_token_stats.sql
-------------------------------------------------------------------------------
-- hybrid_search_token_stats
-- Per token: how many documents carry it and its largest weight, as of the
-- last hybrid_search_refresh(). weight * max_weight bounds what a query token
-- can add to any document's sparse score, and the view shows which tokens
-- are common or rare. Read from the inverted index, which a refresh has just
-- rebuilt from documents.
create materialized view if not exists @extschema@.hybrid_search_token_stats as
select
    p.token_id,
    sum(pg_catalog.octet_length(p.weights) / 4) as document_frequency,
    max(p.max_weight) as max_weight
from @extschema@.hybrid_search_sparse_postings as p
group by p.token_id;

create unique index if not exists hybrid_search_token_stats_token_id_idx
on @extschema@.hybrid_search_token_stats (token_id);

comment on materialized view @extschema@.hybrid_search_token_stats is
'per-token document frequency and maximum weight of documents.sparse; refresh with hybrid_search_refresh()';

-- TRUNCATE documents empties the statistics too (triggers fire in name
-- order: this one after sparse_index_truncated has emptied the postings).
create or replace trigger token_stats_truncated
after truncate on @extschema@.documents
for each statement execute function @extschema@._index_truncated(
    '@extschema@.hybrid_search_token_stats'
);

-------------------------------------------------------------------------------
-- hybrid_search_refresh
-- Rebuilds the sparse and keyword (BM25) inverted indexes and refreshes the
-- statistics view,
-- without blocking readers or writers (a first refresh of the view, e.g.
-- after pg_restore, cannot be concurrent and blocks readers of it briefly).
create or replace function @extschema@.hybrid_search_refresh()
returns void
as $func$
begin
    perform @extschema@.hybrid_search_rebuild_sparse_index();
    perform @extschema@.hybrid_search_rebuild_keyword_index();
    if (
        select c.relispopulated from pg_catalog.pg_class as c
        where c.oid = '@extschema@.hybrid_search_token_stats'::regclass
    ) then
        refresh materialized view concurrently @extschema@.hybrid_search_token_stats;
    else
        refresh materialized view @extschema@.hybrid_search_token_stats;
    end if;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_refresh is
'rebuild the sparse and keyword inverted indexes and refresh hybrid_search_token_stats';

-------------------------------------------------------------------------------
-- query_tokens
-- The query's BGE-M3 lexical weights with the token each id stands for.
create or replace function @extschema@.query_tokens(query text)
returns table (token_id integer, token text, weight real)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.query_tokens(plpy, query)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.query_tokens is
'tokens of query with their BGE-M3 lexical weights';

-------------------------------------------------------------------------------
-- sparse_explain
-- Why the sparse leg ranks as it does: each query token with its weight,
-- document frequency and the most it can add to any document's score
-- (as of the last hybrid_search_refresh()).
create or replace function @extschema@.sparse_explain(query text)
returns table (
    token_id integer,
    token text,
    query_weight real,
    document_frequency bigint,
    max_document_weight real,
    max_contribution double precision
)
as $func$
    select
        q.token_id,
        q.token,
        q.weight,
        coalesce(s.document_frequency, 0),
        s.max_weight,
        q.weight::double precision * coalesce(s.max_weight, 0)
    from @extschema@.query_tokens(query) as q
    left join @extschema@.hybrid_search_token_stats as s on q.token_id = s.token_id
    order by 6 desc, q.token_id;
$func$
language sql stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_explain is
'query tokens with weight, document frequency and maximum possible score contribution';

-- source: sql/016_sparse_access_method.sql
-------------------------------------------------------------------------------
-- sparse_inverted: an index access method over pgvector's sparsevec
-- (extension/sparse_*.c). CREATE INDEX ... USING sparse_inverted (col
-- sparsevec_ip_ops) serves ORDER BY col <#> q (negative inner product) as an
-- ordinary index scan, in exactly the order of a sequential scan; inserts are
-- found by the next query, VACUUM merges and removes dead rows, and every
-- change is WAL-logged (crash recovery, replicas).
create or replace function @extschema@.sparse_inverted_handler(internal)
returns index_am_handler
as '$libdir/hybrid_search', 'sparse_inverted_handler'
language c strict
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_inverted_handler(internal) is
'handler of the sparse_inverted index access method';

-- CREATE ACCESS METHOD and CREATE OPERATOR CLASS have no IF NOT EXISTS, and
-- this script is re-run by upgrades.
do $block$
begin
    if not exists (select from pg_catalog.pg_am where amname = 'sparse_inverted') then
        create access method sparse_inverted type index
        handler @extschema@.sparse_inverted_handler;
        comment on access method sparse_inverted is
        'exact inverted index over sparsevec for ORDER BY <#> (hybrid_search)';
    end if;
    if not exists (
        select from pg_catalog.pg_opclass as c
        inner join pg_catalog.pg_am as a on c.opcmethod = a.oid
        where a.amname = 'sparse_inverted' and c.opcname = 'sparsevec_ip_ops'
    ) then
        create operator class @extschema@.sparsevec_ip_ops
        default for type @extschema:vector@.sparsevec using sparse_inverted as
        operator 1 @extschema:vector@.<#> (
            @extschema:vector@.sparsevec, @extschema:vector@.sparsevec
        ) for order by pg_catalog.float_ops;
    end if;
end;
$block$;

-------------------------------------------------------------------------------
-- sparse_inverted_check
-- amcheck for a sparse_inverted index: its structure, then every row the
-- caller's snapshot sees indexed with exactly its weights, and every other
-- indexed row a dead or uncommitted one. Blocks VACUUM of the table while it
-- runs, not writes.
create or replace function @extschema@.sparse_inverted_check(index regclass)
returns jsonb
as '$libdir/hybrid_search', 'sparse_inverted_check'
language c strict volatile
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_inverted_check(regclass) is
'compare a sparse_inverted index with its table: {"consistent": bool, "problems": [...], counts}';

revoke all on function @extschema@.sparse_inverted_check(regclass) from public;

-------------------------------------------------------------------------------
-- documents_sparse_idx: the sparse leg's index.
create index if not exists documents_sparse_idx on @extschema@.documents
using sparse_inverted (sparse @extschema@.sparsevec_ip_ops);

-- source: sql/017_query_cache.sql
-------------------------------------------------------------------------------
-- hybrid_search_query_cache
-- Query embeddings shared by every backend: a backend that misses its own
-- cache looks here before running the model, and stores what it computed.
-- UNLOGGED (a cache: emptied by a crash, not replicated, not backed up).
-- key is a SHA-256 of the model, its number format, max_length and the query
-- text; dense and lexical are the float32 vector and the (token id, weight)
-- pairs. Each row belongs to the role that computed it, and row-level
-- security lets a role see and add only its own rows (the primary key leads
-- with the role, so not even a key conflict tells one role that another
-- searched a text): a role never learns another role's queries, nor whether
-- they were cached. The owner sees every row (hashes and vectors; the
-- lexical weights name the query's tokens).
-- entry numbers come from the miss counter, so the oldest entries are the
-- lowest numbers: past query_cache_entries, _query_cache_prune drops them.
-- (unlogged sequences: counting needs no WAL and gives a read-only search no
-- transaction id)
do $block$
begin
    if pg_catalog.to_regclass('@extschema@.hybrid_search_query_cache_hits') is null then
        create unlogged sequence @extschema@.hybrid_search_query_cache_hits;
    end if;
    if pg_catalog.to_regclass('@extschema@.hybrid_search_query_cache_misses') is null then
        create unlogged sequence @extschema@.hybrid_search_query_cache_misses;
    end if;
end;
$block$;

create unlogged table if not exists @extschema@.hybrid_search_query_cache (
    role_name name not null default current_user,
    key bytea not null,
    dense bytea not null,
    lexical bytea not null,
    entry bigint not null,
    created_at timestamptz not null default pg_catalog.now(),
    primary key (role_name, key)
);

create index if not exists hybrid_search_query_cache_entry_idx
on @extschema@.hybrid_search_query_cache (entry);

comment on table @extschema@.hybrid_search_query_cache is
'query embeddings shared by the backends (unlogged; a role sees only its own rows)';

alter table @extschema@.hybrid_search_query_cache enable row level security;

drop policy if exists own_rows on @extschema@.hybrid_search_query_cache;
create policy own_rows on @extschema@.hybrid_search_query_cache
using (role_name = current_user)
with check (role_name = current_user);

-------------------------------------------------------------------------------
-- hybrid_search_query_cache_stats
-- Hits and misses of the shared query cache since it was created or cleared
-- (read-only transactions and standbys neither use nor count it), and how
-- many entries it holds, over all roles: aggregates only.
create or replace view @extschema@.hybrid_search_query_cache_stats as
select
    h.hits,
    m.misses,
    case when h.hits + m.misses > 0 then h.hits::double precision / (h.hits + m.misses) end
        as hit_rate,
    (select count(*) from @extschema@.hybrid_search_query_cache) as entries,
    pg_catalog.pg_total_relation_size('@extschema@.hybrid_search_query_cache'::regclass) as bytes
from
    (
        select case when s.is_called then s.last_value else 0 end as hits
        from @extschema@.hybrid_search_query_cache_hits as s
    ) as h,
    (
        select case when s.is_called then s.last_value else 0 end as misses
        from @extschema@.hybrid_search_query_cache_misses as s
    ) as m;

comment on view @extschema@.hybrid_search_query_cache_stats is
'shared query cache: hits, misses, hit rate, entries and size (aggregates over all roles)';

-------------------------------------------------------------------------------
-- _query_cache_count
-- Counts a hit (or a miss) and returns the counter's new value: the owner's
-- right on the counters, so that no role holds any on a sequence.
create or replace function @extschema@._query_cache_count(hit boolean)
returns bigint
as $func$
    select case
        when hit then pg_catalog.nextval('@extschema@.hybrid_search_query_cache_hits')
        else pg_catalog.nextval('@extschema@.hybrid_search_query_cache_misses')
    end;
$func$
language sql volatile security definer
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._query_cache_count is
'count a hit or a miss of the shared query cache';

-------------------------------------------------------------------------------
-- _query_cache_put
-- Stores a query embedding for the calling role; returns its entry number,
-- or NULL when it was not stored: another transaction of the role is storing
-- the same key (the advisory lock makes this one skip rather than wait for
-- that transaction to end) or already has. Volatile, so that the embedding
-- functions (stable) can write through it.
create or replace function @extschema@._query_cache_put(
    cache_key bytea, dense bytea, lexical bytea, lock_key integer
) returns bigint
as $func$
    insert into @extschema@.hybrid_search_query_cache as c (key, dense, lexical, entry)
    select
        cache_key, dense, lexical,
        @extschema@._query_cache_count(false)
    where pg_catalog.pg_try_advisory_xact_lock(1752392049, lock_key)  -- 'hsqq'
    on conflict do nothing
    returning c.entry;
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._query_cache_put is
'store a query embedding in the shared query cache for the calling role';

-------------------------------------------------------------------------------
-- _query_cache_prune
-- Drops the oldest entries beyond query_cache_entries (by entry number, so
-- a few more may stay after inserts that lost a race). Runs with the owner's
-- rights (a role cannot delete others' rows itself) and returns nothing.
create or replace function @extschema@._query_cache_prune(newest bigint)
returns void
as $func$
    delete from @extschema@.hybrid_search_query_cache as c
    where c.entry <= newest - (select s.query_cache_entries from @extschema@.hybrid_search_settings as s);
$func$
language sql volatile security definer
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._query_cache_prune is
'drop the shared query cache''s entries older than the newest query_cache_entries';

-------------------------------------------------------------------------------
-- hybrid_search_query_cache_clear
-- Empties the shared query cache and resets its counters (owner only).
create or replace function @extschema@.hybrid_search_query_cache_clear()
returns void
as $func$
begin
    truncate @extschema@.hybrid_search_query_cache;
    perform pg_catalog.setval('@extschema@.hybrid_search_query_cache_hits', 1, false);
    perform pg_catalog.setval('@extschema@.hybrid_search_query_cache_misses', 1, false);
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_query_cache_clear is
'empty the shared query cache and reset its hit and miss counters';

-- source: sql/020_embedding_queue.sql
-------------------------------------------------------------------------------
-- hybrid_search_queue
-- Documents waiting to be embedded (embed_mode 'queued', or a backfill). One
-- entry per document: a document rewritten while queued is embedded once,
-- from the content it has when a worker takes it. Kept by pg_dump, so a
-- restore loses no pending work.
create table if not exists @extschema@.hybrid_search_queue (
    doc_id bigint primary key,
    queued_at timestamptz not null default pg_catalog.now(),
    attempts integer not null default 0,
    not_before timestamptz not null default pg_catalog.now(),
    last_error text
);

create index if not exists hybrid_search_queue_ready on @extschema@.hybrid_search_queue (not_before, doc_id);

comment on table @extschema@.hybrid_search_queue is
'documents waiting for hybrid_search_worker (attempts and last_error after failures)';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_queue', '');

-------------------------------------------------------------------------------
-- hybrid_search_errors
-- Queued documents that failed queue_max_attempts times. Nothing is dropped:
-- the document stays in documents (without vectors) and
-- hybrid_search_retry_errors() queues it again.
create table if not exists @extschema@.hybrid_search_errors (
    doc_id bigint primary key,
    failed_at timestamptz not null default pg_catalog.now(),
    attempts integer not null,
    error text not null
);

comment on table @extschema@.hybrid_search_errors is
'queued documents that failed every attempt, with the last error; see hybrid_search_retry_errors()';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_errors', '');

-------------------------------------------------------------------------------
-- hybrid_search_worker_log
-- One row per batch a worker committed: the source of the throughput view.
-- Rows older than a day are pruned by the workers.
create table if not exists @extschema@.hybrid_search_worker_log (
    finished_at timestamptz not null default pg_catalog.clock_timestamp(),
    worker_pid integer not null default pg_catalog.pg_backend_pid(),
    embedded integer not null,
    retried integer not null,
    failed integer not null,
    seconds double precision not null
);

create index if not exists hybrid_search_worker_log_finished on @extschema@.hybrid_search_worker_log (finished_at);

comment on table @extschema@.hybrid_search_worker_log is
'batches committed by hybrid_search_worker in the last day: rows embedded, retried, failed, seconds';

-------------------------------------------------------------------------------
-- hybrid_search_enqueue
-- Queue documents for embedding; returns how many were newly queued. A
-- document already queued keeps its entry (never waiting for a worker that
-- holds it); one that had failed for good leaves hybrid_search_errors.
-- Workers listening on channel hybrid_search_queue are woken at commit.
create or replace function @extschema@.hybrid_search_enqueue(ids bigint[])
returns bigint
as $func$
declare
    added bigint;
begin
    if ids is null or cardinality(ids) = 0 then
        return 0;
    end if;
    delete from @extschema@.hybrid_search_errors as e where e.doc_id = any(ids);
    insert into @extschema@.hybrid_search_queue (doc_id)
    select distinct i.id from pg_catalog.unnest(ids) as i (id) where i.id is not null
    on conflict (doc_id) do nothing;
    get diagnostics added = row_count;
    if added > 0 then
        perform pg_catalog.pg_notify('hybrid_search_queue', '');
    end if;
    return added;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_enqueue is
'queue these documents for hybrid_search_worker; returns the number newly queued';

-------------------------------------------------------------------------------
-- hybrid_search_backfill
-- Queue every document without vectors (or, with all_documents, every
-- document, e.g. after a settings change). Returns how many were queued.
create or replace function @extschema@.hybrid_search_backfill(all_documents boolean default false)
returns bigint
as $func$
    select @extschema@.hybrid_search_enqueue(array(
        select d.id from @extschema@.documents as d
        where all_documents or d.dense is null or d.sparse is null
        order by d.id
    ));
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_backfill is
'queue documents lacking vectors (all_documents => true: every document); returns the number queued';

-------------------------------------------------------------------------------
-- hybrid_search_retry_errors
-- Give documents that failed for good another full set of attempts.
create or replace function @extschema@.hybrid_search_retry_errors()
returns bigint
as $func$
    select @extschema@.hybrid_search_enqueue(array(
        select e.doc_id from @extschema@.hybrid_search_errors as e order by e.doc_id
    ));
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_retry_errors is
'queue every document in hybrid_search_errors again; returns the number queued';

-------------------------------------------------------------------------------
-- _queue_clear
-- Statement trigger: TRUNCATE documents empties the queue and the errors.
create or replace function @extschema@._queue_clear()
returns trigger
as $func$
begin
    truncate @extschema@.hybrid_search_queue, @extschema@.hybrid_search_errors;
    return null;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_queue_clear
after truncate on @extschema@.documents
for each statement execute function @extschema@._queue_clear();

-- source: sql/021_embedding_worker.sql
-------------------------------------------------------------------------------
-- _queue_failed
-- Record a failed attempt: retry after queue_retry_seconds, doubling each
-- time (at most an hour), or after queue_max_attempts move the document to
-- hybrid_search_errors. Returns true when it gave up.
create or replace function @extschema@._queue_failed(failed_id bigint, message text)
returns boolean
as $func$
declare
    s @extschema@.hybrid_search_settings;
    tries integer;
begin
    select * into s from @extschema@.hybrid_search_settings;
    update @extschema@.hybrid_search_queue as q
    set
        attempts = q.attempts + 1,
        last_error = message,
        not_before = pg_catalog.clock_timestamp()
        + pg_catalog.make_interval(
            secs => least(3600, s.queue_retry_seconds * power(2, least(q.attempts, 20)))
        )
    where q.doc_id = failed_id
    returning q.attempts into tries;
    if tries < s.queue_max_attempts then
        return false;
    end if;
    delete from @extschema@.hybrid_search_queue as q where q.doc_id = failed_id;
    insert into @extschema@.hybrid_search_errors as e (doc_id, attempts, error)
    values (failed_id, tries, message)
    on conflict (doc_id) do update
        set failed_at = excluded.failed_at, attempts = excluded.attempts, error = excluded.error;
    return true;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_process_queue
-- One batch, in the caller's transaction: lock up to batch_size ready queue
-- entries (skipping those other workers hold), embed the documents' current
-- content in one model call, store the vectors and delete the entries. If
-- the batch fails, its documents are embedded one by one so that a bad
-- document fails alone. An entry whose document was rewritten meanwhile
-- stays queued for the newest content; one whose document is gone is
-- dropped.
create or replace function @extschema@.hybrid_search_process_queue(batch_size integer default null)
returns table (taken integer, embedded integer, retried integer, failed integer)
as $func$
#variable_conflict use_column
declare
    started timestamptz := pg_catalog.clock_timestamp();
    ids bigint[];
    contents text[];
    stored bigint[] := '{}';
    message text;
    n_retried integer := 0;
    n_failed integer := 0;
    n_taken integer;
begin
    if batch_size is not null and (batch_size < 1 or batch_size > 4096) then
        raise exception 'hybrid_search_process_queue: batch_size must be between 1 and 4096, got %',
            batch_size
        using errcode = 'invalid_parameter_value';
    end if;
    select array_agg(r.doc_id order by r.doc_id) into ids
    from (
        select q.doc_id
        from @extschema@.hybrid_search_queue as q
        where q.not_before <= pg_catalog.clock_timestamp()
        order by q.not_before, q.doc_id
        limit coalesce(batch_size, (select s.batch_size from @extschema@.hybrid_search_settings as s))
        for update skip locked
    ) as r;
    if ids is null then
        return query select 0, 0, 0, 0;
        return;
    end if;
    n_taken := cardinality(ids);
    delete from @extschema@.hybrid_search_queue as q
    where
        q.doc_id = any(ids)
        and not exists (select from @extschema@.documents as d where d.id = q.doc_id);
    select array_agg(d.id order by d.id), array_agg(d.content order by d.id)
    into ids, contents
    from @extschema@.documents as d
    where d.id = any(ids);
    if ids is not null then
        begin
            stored := @extschema@._embed_and_store(ids, contents);
        exception when others then
            for i in 1 .. cardinality(ids) loop
                begin
                    stored := stored || @extschema@._embed_and_store(array[ids[i]], array[contents[i]]);
                exception when others then
                    get stacked diagnostics message = message_text;
                    if @extschema@._queue_failed(ids[i], message) then
                        n_failed := n_failed + 1;
                    else
                        n_retried := n_retried + 1;
                    end if;
                end;
            end loop;
        end;
        delete from @extschema@.hybrid_search_queue as q where q.doc_id = any(stored);
    end if;
    insert into @extschema@.hybrid_search_worker_log (embedded, retried, failed, seconds)
    values (
        cardinality(stored), n_retried, n_failed,
        extract(epoch from pg_catalog.clock_timestamp() - started)
    );
    return query select n_taken, cardinality(stored), n_retried, n_failed;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_process_queue is
'embed one batch of queued documents in this transaction; returns rows taken, embedded, retried, failed';

-------------------------------------------------------------------------------
-- hybrid_search_worker
-- Drain the queue: one committed transaction per batch, until no entry is
-- ready (or max_batches batches). Run it with CALL outside a transaction
-- block: from psql, pg_cron or `hybrid-search worker`. Any number of workers
-- can run at once; each batch is taken by one of them. No SET search_path
-- here: a procedure with one cannot COMMIT, so every name is qualified.
create or replace procedure @extschema@.hybrid_search_worker(
    max_batches integer default null,
    batch_size integer default null,
    inout embedded bigint default 0,
    inout failed bigint default 0
)
as $func$
declare
    batch record;
    batches integer := 0;
begin
    if max_batches is not null and max_batches < 1 then
        raise exception 'hybrid_search_worker: max_batches must be 1 or more, got %', max_batches
        using errcode = 'invalid_parameter_value';
    end if;
    embedded := 0;
    failed := 0;
    delete from @extschema@.hybrid_search_worker_log as l
    where l.finished_at < pg_catalog.now() - interval '1 day';
    commit;
    loop
        exit when batches >= max_batches;
        select * into batch from @extschema@.hybrid_search_process_queue(batch_size);
        commit;
        exit when batch.taken = 0;
        batches := batches + 1;
        embedded := embedded + batch.embedded;
        failed := failed + batch.failed;
    end loop;
end;
$func$
language plpgsql security invoker;

comment on procedure @extschema@.hybrid_search_worker is
'CALL to embed queued documents, one transaction per batch, until none is ready (or max_batches)';

-- source: sql/022_queue_status.sql
-------------------------------------------------------------------------------
-- hybrid_search_queue_status
-- The embedding queue at a glance, for psql and monitoring: what is waiting,
-- how old the oldest entry is, what failed, and what the workers did in the
-- last minutes.
create or replace view @extschema@.hybrid_search_queue_status as
with queue as (
    select
        count(*) as queued,
        count(*) filter (where qu.not_before <= pg_catalog.now()) as ready,
        count(*) filter (where qu.attempts > 0) as retrying,
        pg_catalog.now() - min(qu.queued_at) as oldest_pending_age
    from @extschema@.hybrid_search_queue as qu
),

errors as (
    select count(*) as errors from @extschema@.hybrid_search_errors
),

recent as (
    select
        coalesce(sum(wl.embedded) filter (
            where wl.finished_at > pg_catalog.now() - interval '1 minute'
        ), 0) as embedded_last_minute,
        coalesce(sum(wl.embedded) filter (
            where wl.finished_at > pg_catalog.now() - interval '5 minutes'
        ), 0) as embedded_last_5_minutes,
        coalesce(sum(wl.embedded), 0) as embedded_last_15_minutes,
        count(distinct wl.worker_pid) filter (
            where wl.finished_at > pg_catalog.now() - interval '1 minute'
        ) as workers_last_minute
    from @extschema@.hybrid_search_worker_log as wl
    where wl.finished_at > pg_catalog.now() - interval '15 minutes'
)

select
    queue.queued,
    queue.ready,
    queue.retrying,
    queue.oldest_pending_age,
    errors.errors,
    recent.embedded_last_minute,
    recent.embedded_last_5_minutes,
    recent.embedded_last_15_minutes,
    recent.workers_last_minute,
    round(recent.embedded_last_5_minutes / 300.0, 1) as rows_per_second_5_minutes
from queue, errors, recent;

comment on view @extschema@.hybrid_search_queue_status is
'embedding queue: queued, ready, retrying, oldest pending age, errors, rows embedded recently, workers';

-- source: sql/023_backend_memory.sql
-------------------------------------------------------------------------------
-- hybrid_search_backend_memory
-- Every server process with its memory (RSS, PSS, private, from
-- /proc/<pid>/smaps_rollup), whether it has loaded torch (every process does
-- when the postmaster preloads it), and how many files of the configured
-- model it maps (only the backends that embedded). PSS shares mapped weights among the
-- processes mapping them, so sum(pss_mb) is what the server really uses.
-- Granted to pg_monitor only: it shows server internals.
create or replace function @extschema@.hybrid_search_backend_memory()
returns table (
    pid integer,
    backend_type text,
    application_name text,
    torch_loaded boolean,
    model_files_mapped integer,
    rss_mb double precision,
    pss_mb double precision,
    private_mb double precision
)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.backend_memory(plpy)
$python$
language plpython3u volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_backend_memory is
'memory (RSS, PSS, private MB) of every server process, and which have loaded torch and the model';

revoke all on function @extschema@.hybrid_search_backend_memory() from public;
grant execute on function @extschema@.hybrid_search_backend_memory() to pg_monitor;
grant execute on function @extschema@.hybrid_search_load_python() to pg_monitor;

-- source: sql/024_sources.sql
-------------------------------------------------------------------------------
-- hybrid_search_sources
-- User tables whose rows are searched. Each enabled table keeps a copy of
-- every row's content (and chosen columns as metadata) in documents, kept in
-- step by statement triggers on the table, so one set of indexes, one sparse
-- index and one embedding queue serve every table. source is the table's
-- schema-qualified name as enabled; renaming the table or moving it to
-- another schema is refused (disable, rename, enable), dropping it removes
-- its copies (event triggers below).
create table if not exists @extschema@.hybrid_search_sources (
    source text primary key,
    key_column name not null,
    content_column name not null,
    metadata_columns name[],
    embed_mode text check (embed_mode in ('sync', 'queued')),
    enabled_at timestamptz not null default pg_catalog.now()
);

comment on table @extschema@.hybrid_search_sources is
'tables enabled with hybrid_search_enable: key and content columns, metadata columns, embed mode';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_sources', '');

-------------------------------------------------------------------------------
-- _source_type_trusted
-- Whether values of this type reach text and jsonb only through code a
-- superuser installed: the type, and every type it is built on (domain base,
-- array element, composite attribute), is owned by a superuser, so no other
-- role can have created a cast of it (to text or json) that to_jsonb or ::text
-- would call. The copy triggers run as the owner: a value of any other type is
-- rendered by its output function (pg_catalog.format('%s')), which only a
-- superuser can write.
create or replace function @extschema@._source_type_trusted(typ regtype)
returns boolean
as $func$
    with recursive parts (oid) as (
        select typ::oid
        union
        select x.oid
        from parts as p
        inner join pg_catalog.pg_type as t on p.oid = t.oid
        cross join lateral (
            select t.typbasetype
            union all
            select t.typelem
            union all
            select a.atttypid from pg_catalog.pg_attribute as a
            where a.attrelid = t.typrelid and a.attnum > 0
        ) as x (oid)
        where x.oid <> 0
    )

    select coalesce(pg_catalog.bool_and(r.rolsuper), false)
    from parts as p
    inner join pg_catalog.pg_type as t on p.oid = t.oid
    inner join pg_catalog.pg_roles as r on t.typowner = r.oid;
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_value_sql
-- The expression for column col of row alias of an enabled table: as_text,
-- the key's text (source_key); else a metadata value. A type that is not
-- _source_type_trusted becomes its output function's text.
create or replace function @extschema@._source_value_sql(
    src @extschema@.hybrid_search_sources, col name, alias text, as_text boolean
) returns text
as $func$
    select case
        when not @extschema@._source_type_trusted(a.atttypid)
            then pg_catalog.format('pg_catalog.format(''%%s'', %s.%I)', alias, col)
        when as_text then pg_catalog.format('%s.%I::text', alias, col)
        else pg_catalog.format('%s.%I', alias, col)
    end
    from pg_catalog.pg_attribute as a
    where a.attrelid = src.source::regclass and a.attname = col and not a.attisdropped;
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_row_sql
-- The SELECT list that turns a row n of an enabled table into documents
-- columns (content, metadata, source, source_key); identifiers quoted with
-- format('%I'), the source name as a literal, values as _source_value_sql
-- renders them (metadata: metadata_columns, or every column but content;
-- jsonb_build_object takes at most 50 pairs, so chunks are concatenated).
create or replace function @extschema@._source_row_sql(src @extschema@.hybrid_search_sources)
returns text
as $func$
    select pg_catalog.format(
        'n.%1$I::text, %2$s || pg_catalog.jsonb_build_object(''_source'', %3$L), %3$L, %4$s',
        src.content_column,
        (
            select coalesce(pg_catalog.string_agg(chunk.sql, ' || '), '''{}''::jsonb')
            from (
                select
                    'pg_catalog.jsonb_build_object('
                    || pg_catalog.string_agg(
                        pg_catalog.format(
                            '%L, %s', c.name, @extschema@._source_value_sql(src, c.name, 'n', false)
                        ),
                        ', ' order by c.ord
                    )
                    || ')' as sql
                from (
                    select m.name, m.ord
                    from pg_catalog.unnest(src.metadata_columns) with ordinality as m (name, ord)
                    union all
                    select a.attname, a.attnum::bigint
                    from pg_catalog.pg_attribute as a
                    where
                        src.metadata_columns is null
                        and a.attrelid = src.source::regclass and a.attnum > 0 and not a.attisdropped
                        and a.attname <> src.content_column
                ) as c
                group by (c.ord - 1) / 50
            ) as chunk
        ),
        src.source,
        @extschema@._source_value_sql(src, src.key_column, 'n', true)
    );
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_changed
-- Statement trigger (INSERT, UPDATE, DELETE) on an enabled table, or on a
-- partition of one (then tg_argv[0] names the enabled table): upsert the
-- written rows into documents in one statement, so that their embedding is
-- batched (or queued) by the documents triggers; deleted rows, rows whose
-- content became NULL and the old keys of rows whose key changed leave
-- documents. Runs as the owner (SECURITY DEFINER, search_path pinned): the
-- copy is derived data like the indexes, kept exact whoever writes the table
-- (the table's own privileges and policies decide who may), and no writer
-- needs, or gets, a right on documents.source or source_key. Keys are
-- rendered as text under fixed settings (UTC, ISO dates...), never the
-- writer's: a key must give the same text in every session.
create or replace function @extschema@._source_changed()
returns trigger
as $func$
declare
    src @extschema@.hybrid_search_sources;
begin
    select * into strict src
    from @extschema@.hybrid_search_sources as s
    where s.source = coalesce(tg_argv[0], tg_relid::regclass::text);
    if tg_op = 'DELETE' then
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select %s from old_rows as o)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'o', true)
        );
        return null;
    end if;
    execute pg_catalog.format(
        'insert into @extschema@.documents as d (content, metadata, source, source_key)'
        ' select %s from new_rows as n where n.%I is not null'
        ' on conflict (source, source_key) do update'
        ' set content = excluded.content, metadata = excluded.metadata'
        ' where d.content is distinct from excluded.content'
        ' or d.metadata is distinct from excluded.metadata',
        @extschema@._source_row_sql(src), src.content_column
    );
    if tg_op = 'UPDATE' then
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select %s from old_rows as o)'
            ' and d.source_key not in (select %s from new_rows as n where n.%I is not null)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'o', true),
            @extschema@._source_value_sql(src, src.key_column, 'n', true), src.content_column
        );
    end if;
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

-------------------------------------------------------------------------------
-- _source_truncated
-- Statement trigger: TRUNCATE of an enabled table (AFTER) removes its rows
-- from documents; TRUNCATE of one of its partitions (BEFORE, tg_argv[0]
-- names the enabled table) removes the partition's rows. Owner's rights, as
-- _source_changed.
create or replace function @extschema@._source_truncated()
returns trigger
as $func$
declare
    src @extschema@.hybrid_search_sources;
begin
    select * into strict src
    from @extschema@.hybrid_search_sources as s
    where s.source = coalesce(tg_argv[0], tg_relid::regclass::text);
    if tg_nargs = 0 then
        delete from @extschema@.documents as d where d.source = src.source;
    else
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select %s from %s as o)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'o', true), tg_relid::regclass
        );
    end if;
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

-------------------------------------------------------------------------------
-- hybrid_search_enable
-- Make a table searchable: its single-column primary key identifies rows,
-- content_column (text) is embedded, metadata_columns (default: every other
-- column) become metadata for filters. Existing rows are queued for
-- hybrid_search_worker / `hybrid-search backfill`; later writes follow mode
-- ('sync' or 'queued'; NULL = hybrid_search_settings.embed_mode).
-- Returns the number of existing rows queued.
create or replace function @extschema@.hybrid_search_enable(
    source_table regclass,
    content_column name,
    mode text default 'queued',
    metadata_columns name[] default null
) returns bigint
as $func$
declare
    src @extschema@.hybrid_search_sources;
    keys name[];
    missing name;
    queued bigint;
begin
    if source_table is null or content_column is null then
        raise exception 'hybrid_search_enable: source_table and content_column are required'
        using errcode = 'invalid_parameter_value';
    end if;
    if mode is not null and mode not in ('sync', 'queued') then
        raise exception 'hybrid_search_enable: mode must be ''sync'', ''queued'' or NULL, got %', mode
        using errcode = 'invalid_parameter_value';
    end if;
    if (select c.relkind from pg_catalog.pg_class as c where c.oid = source_table) not in ('r', 'p') then
        raise exception 'hybrid_search_enable: % is not a table', source_table
        using errcode = 'wrong_object_type';
    end if;
    if exists (select from @extschema@.hybrid_search_sources as s where s.source = source_table::text) then
        raise exception 'hybrid_search_enable: % is already enabled', source_table
        using errcode = 'duplicate_object';
    end if;
    select array_agg(a.attname) into keys
    from pg_catalog.pg_index as i
    inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
    where i.indrelid = source_table and i.indisprimary;
    if cardinality(keys) is distinct from 1 then
        raise exception 'hybrid_search_enable: % needs a single-column primary key', source_table
        using errcode = 'invalid_table_definition';
    end if;
    if not exists (
        select from pg_catalog.pg_attribute as a
        where
            a.attrelid = source_table and a.attname = content_column and not a.attisdropped
            and a.atttypid in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
    ) then
        raise exception 'hybrid_search_enable: % has no text column %', source_table,
            pg_catalog.quote_ident(content_column)
        using errcode = 'undefined_column';
    end if;
    select c.name into missing
    from pg_catalog.unnest(metadata_columns) as c (name)
    where not exists (
        select from pg_catalog.pg_attribute as a
        where a.attrelid = source_table and a.attname = c.name and a.attnum > 0 and not a.attisdropped
    )
    limit 1;
    if missing is not null then
        raise exception 'hybrid_search_enable: % has no column %', source_table,
            pg_catalog.quote_ident(missing)
        using errcode = 'undefined_column';
    end if;

    if (select c.relpersistence from pg_catalog.pg_class as c where c.oid = source_table) = 't' then
        raise exception 'hybrid_search_enable: % is a temporary table (its copies would outlive it)',
            source_table
        using errcode = 'wrong_object_type';
    end if;
    if exists (
        select from @extschema@.hybrid_search_sources as s
        where
            s.source in (select a.relid::text from pg_catalog.pg_partition_ancestors(source_table) as a)
            or s.source in (select t.relid::text from pg_catalog.pg_partition_tree(source_table) as t)
    ) then
        raise exception 'hybrid_search_enable: a partition or partitioned table containing % is enabled already',
            source_table
        using errcode = 'duplicate_object';
    end if;

    insert into @extschema@.hybrid_search_sources as s (
        source, key_column, content_column, metadata_columns, embed_mode
    )
    values (source_table::text, keys[1], content_column, metadata_columns, mode)
    returning s.* into src;
    perform @extschema@._source_create_triggers(source_table, null);
    -- a write straight to a partition fires only the partition's triggers
    perform @extschema@._source_create_triggers(t.relid, src.source)
    from pg_catalog.pg_partition_tree(source_table) as t
    where t.relid <> source_table;
    -- existing rows are queued whatever the mode: enabling must not embed a
    -- large table inside this transaction
    perform pg_catalog.set_config('hybrid_search.queue_writes', 'on', true);
    execute pg_catalog.format(
        'insert into @extschema@.documents (content, metadata, source, source_key)'
        ' select %s from %s as n where n.%I is not null',
        @extschema@._source_row_sql(src), source_table, src.content_column
    );
    get diagnostics queued = row_count;
    perform pg_catalog.set_config('hybrid_search.queue_writes', 'off', true);
    return queued;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

comment on function @extschema@.hybrid_search_enable is
'make a table searchable (copy, triggers, existing rows queued); returns the number of rows queued';

-------------------------------------------------------------------------------
-- hybrid_search_disable
-- Undo hybrid_search_enable: drop its triggers and remove the table's rows
-- from documents (and the queue). The table itself is untouched. Returns the
-- number of documents removed.
create or replace function @extschema@.hybrid_search_disable(source_table regclass)
returns bigint
as $func$
declare
    removed bigint;
begin
    if not exists (select from @extschema@.hybrid_search_sources as s where s.source = source_table::text) then
        raise exception 'hybrid_search_disable: % is not enabled', source_table
        using errcode = 'undefined_object';
    end if;
    -- forgotten first: the event trigger then leaves the dropped triggers alone
    select @extschema@._source_forget(source_table::text) into removed;
    perform @extschema@._source_drop_triggers(source_table, 'hybrid_search');
    perform @extschema@._source_drop_triggers(g.tgrelid::regclass, 'hybrid_search_partition')
    from pg_catalog.pg_trigger as g
    where
        g.tgname = 'hybrid_search_partition_inserted'
        and g.tgfoid = '@extschema@._source_changed'::regproc
        and g.tgargs = pg_catalog.convert_to(source_table::text, 'UTF8') || '\x00'::bytea;
    return removed;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_disable is
'remove what hybrid_search_enable added to a table (triggers, its documents); returns documents removed';

-------------------------------------------------------------------------------
-- _source_filter
-- filter narrowed to one enabled table's documents (NULL source: unchanged).
create or replace function @extschema@._source_filter(source_table regclass, filter jsonb)
returns jsonb
as $func$
begin
    if source_table is null then
        return filter;
    end if;
    if not exists (select from @extschema@.hybrid_search_sources as s where s.source = source_table::text) then
        raise exception 'hybrid_search: % is not enabled; call hybrid_search_enable first', source_table
        using errcode = 'undefined_object';
    end if;
    return coalesce(filter, '{}'::jsonb) || pg_catalog.jsonb_build_object('_source', source_table::text);
end;
$func$
language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-- source: sql/025_source_ddl.sql
-------------------------------------------------------------------------------
-- Enabled tables (024_sources.sql) under DDL and hostile writes: the triggers
-- hybrid_search_enable creates, and what keeps the copies exact when
-- partitions come and go or the table is dropped; renames and column changes
-- that would break them are refused.

-------------------------------------------------------------------------------
-- _source_create_triggers
-- The statement triggers that keep documents in step with an enabled table
-- (enabled_as NULL) or with one of its partitions (enabled_as: the enabled
-- table, passed to the trigger functions; a write straight to a partition
-- fires only the partition's statement triggers).
create or replace function @extschema@._source_create_triggers(tbl regclass, enabled_as text)
returns void
as $func$
declare
    prefix text := case when enabled_as is null then 'hybrid_search' else 'hybrid_search_partition' end;
    args text := case when enabled_as is null then '' else pg_catalog.quote_literal(enabled_as) end;
begin
    execute pg_catalog.format(
        'create trigger %I after insert on %s referencing new table as new_rows'
        ' for each statement execute function @extschema@._source_changed(%s)',
        prefix || '_inserted', tbl, args
    );
    execute pg_catalog.format(
        'create trigger %I after update on %s referencing old table as old_rows new table as new_rows'
        ' for each statement execute function @extschema@._source_changed(%s)',
        prefix || '_updated', tbl, args
    );
    execute pg_catalog.format(
        'create trigger %I after delete on %s referencing old table as old_rows'
        ' for each statement execute function @extschema@._source_changed(%s)',
        prefix || '_deleted', tbl, args
    );
    -- a partition's rows must be read before it is emptied
    execute pg_catalog.format(
        'create trigger %I %s truncate on %s'
        ' for each statement execute function @extschema@._source_truncated(%s)',
        prefix || '_truncated', case when enabled_as is null then 'after' else 'before' end, tbl, args
    );
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_drop_triggers
-- Drop what _source_create_triggers created on a table (prefix
-- 'hybrid_search' or 'hybrid_search_partition').
create or replace function @extschema@._source_drop_triggers(tbl regclass, prefix text)
returns void
as $func$
declare
    kind text;
begin
    foreach kind in array array['_inserted', '_updated', '_deleted', '_truncated'] loop
        execute pg_catalog.format('drop trigger if exists %I on %s', prefix || kind, tbl);
    end loop;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_forget
-- An enabled table's copies leave documents, the queue and the errors, and
-- the table leaves hybrid_search_sources. Returns the documents removed.
create or replace function @extschema@._source_forget(source_name text)
returns bigint
as $func$
declare
    removed bigint;
begin
    delete from @extschema@.hybrid_search_queue as q
    where q.doc_id in (select d.id from @extschema@.documents as d where d.source = source_name);
    delete from @extschema@.hybrid_search_errors as e
    where e.doc_id in (select d.id from @extschema@.documents as d where d.source = source_name);
    delete from @extschema@.documents as d where d.source = source_name;
    get diagnostics removed = row_count;
    delete from @extschema@.hybrid_search_sources as s where s.source = source_name;
    return removed;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_reserved
-- Row trigger on documents: metadata "_source" (what source => filters on)
-- belongs to the copies of enabled tables; no other row may claim it, or a
-- writer could plant rows in another table's searches.
create or replace function @extschema@._source_reserved()
returns trigger
as $func$
begin
    if new.metadata ? '_source' and new.metadata ->> '_source' is distinct from new.source then
        raise exception 'documents: metadata key "_source" is reserved for rows copied from tables enabled with hybrid_search_enable'
        using errcode = 'check_violation';
    end if;
    return new;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_source_reserved
before insert or update of metadata, source on @extschema@.documents
for each row execute function @extschema@._source_reserved();

-------------------------------------------------------------------------------
-- _source_sync
-- Keep an enabled partitioned table's copy exact after its partitions
-- changed: new or attached partitions get the triggers, and the rows of an
-- attached one are copied (queued for embedding, like hybrid_search_enable's);
-- a detached table loses the triggers and its rows' copies; removed (a
-- partition was dropped, its rows are gone): copies of rows no longer in the
-- table leave documents (a pass over the table). Called by the event
-- triggers only (owner's rights, no input from the caller).
create or replace function @extschema@._source_sync(src @extschema@.hybrid_search_sources, removed boolean)
returns void
as $func$
declare
    part regclass;
    leaf boolean;
begin
    for part, leaf in
        select t.relid, t.isleaf from pg_catalog.pg_partition_tree(src.source::regclass) as t
        where
            t.relid <> src.source::regclass
            and not exists (
                select from pg_catalog.pg_trigger as g
                where g.tgrelid = t.relid and g.tgname = 'hybrid_search_partition_inserted'
            )
    loop
        perform @extschema@._source_create_triggers(part, src.source);
        if leaf then  -- the leaves hold the rows
            perform pg_catalog.set_config('hybrid_search.queue_writes', 'on', true);
            execute pg_catalog.format(
                'insert into @extschema@.documents as d (content, metadata, source, source_key)'
                ' select %s from %s as n where n.%I is not null'
                ' on conflict (source, source_key) do update'
                ' set content = excluded.content, metadata = excluded.metadata'
                ' where d.content is distinct from excluded.content'
                ' or d.metadata is distinct from excluded.metadata',
                @extschema@._source_row_sql(src), part, src.content_column
            );
            perform pg_catalog.set_config('hybrid_search.queue_writes', 'off', true);
        end if;
    end loop;
    for part in
        select g.tgrelid::regclass from pg_catalog.pg_trigger as g
        where
            g.tgname = 'hybrid_search_partition_inserted'
            and g.tgfoid = '@extschema@._source_changed'::regproc
            and g.tgargs = pg_catalog.convert_to(src.source, 'UTF8') || '\x00'::bytea
            and g.tgrelid not in (
                select t.relid from pg_catalog.pg_partition_tree(src.source::regclass) as t
            )
    loop
        perform @extschema@._source_drop_triggers(part, 'hybrid_search_partition');
        -- keys are unique across the partitions: these rows left the table
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L'
            ' and d.source_key in (select %s from %s as n)',
            src.source, @extschema@._source_value_sql(src, src.key_column, 'n', true), part
        );
    end loop;
    if removed then
        execute pg_catalog.format(
            'delete from @extschema@.documents as d where d.source = %L and not exists'
            ' (select from %s as n where %s = d.source_key and n.%I is not null)',
            src.source, src.source, @extschema@._source_value_sql(src, src.key_column, 'n', true),
            src.content_column
        );
    end if;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp
set timezone to 'UTC'
set datestyle to 'ISO, YMD'
set intervalstyle to 'postgres'
set extra_float_digits to '1'
set bytea_output to 'hex';

-------------------------------------------------------------------------------
-- _source_dropped
-- Event trigger (sql_drop): a dropped enabled table's copies leave documents
-- (and the queue), and it leaves hybrid_search_sources, so that nothing of it
-- stays searchable; a dropped partition's rows leave its enabled table's
-- copy. SECURITY DEFINER (search_path pinned): any owner of an enabled table
-- may drop it; the function takes no input but the catalog's list of
-- dropped objects.
create or replace function @extschema@._source_dropped()
returns event_trigger
as $func$
declare
    src @extschema@.hybrid_search_sources;
begin
    for src in
        select s.* from @extschema@.hybrid_search_sources as s
        where s.source in (
            select o.object_identity from pg_catalog.pg_event_trigger_dropped_objects() as o
            where o.object_type in ('table', 'partitioned table')
        )
    loop
        perform @extschema@._source_forget(src.source);
    end loop;
    if exists (
        select from pg_catalog.pg_event_trigger_dropped_objects() as o
        where o.object_type = 'trigger' and o.object_identity like 'hybrid\_search\_partition\_inserted on %'
    ) then
        for src in
            select s.* from @extschema@.hybrid_search_sources as s
            inner join pg_catalog.pg_class as c on pg_catalog.to_regclass(s.source) = c.oid
            where c.relkind = 'p'
        loop
            perform @extschema@._source_sync(src, true);
        end loop;
    end if;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _source_altered
-- Event trigger (ddl_command_end of CREATE TABLE, ALTER TABLE, ALTER SCHEMA):
-- an enabled table renamed or moved to another schema, or whose key,
-- content or metadata columns changed, would break its copy: refused (the
-- command rolls back) with what to do instead. Partitions created, attached
-- or detached: handled by _source_sync. Only tables the command touched (and
-- tables of schemas it touched) are looked at. SECURITY DEFINER as
-- _source_dropped.
create or replace function @extschema@._source_altered()
returns event_trigger
as $func$
declare
    touched oid[];
    moved regclass;
    src @extschema@.hybrid_search_sources;
    rel regclass;
    problem text;
begin
    touched := array(
        select c.objid from pg_catalog.pg_event_trigger_ddl_commands() as c
        where c.classid = 'pg_catalog.pg_class'::regclass
        union
        select r.oid from pg_catalog.pg_class as r
        where r.relnamespace in (
            select c.objid from pg_catalog.pg_event_trigger_ddl_commands() as c
            where c.classid = 'pg_catalog.pg_namespace'::regclass
        )
    );
    if cardinality(touched) = 0 then
        return;
    end if;
    select g.tgrelid::regclass into moved
    from pg_catalog.pg_trigger as g
    where
        g.tgrelid = any(touched)
        and g.tgname = 'hybrid_search_inserted'
        and g.tgfoid = '@extschema@._source_changed'::regproc
        and g.tgrelid::regclass::text not in (select s.source from @extschema@.hybrid_search_sources as s)
    limit 1;
    if moved is not null then
        raise exception 'hybrid_search: % is enabled for search under its former name; to rename it or move it to another schema, call hybrid_search_disable first (and hybrid_search_enable after)',
            moved
        using errcode = 'feature_not_supported';
    end if;
    for src in
        select s.* from @extschema@.hybrid_search_sources as s
        where pg_catalog.to_regclass(s.source) in (
            select t.id from pg_catalog.unnest(touched) as t (id)
            union
            select a.relid from pg_catalog.unnest(touched) as t (id)
            cross join lateral pg_catalog.pg_partition_ancestors(t.id) as a
        )
    loop
        rel := src.source::regclass;
        problem := case
            when (
                select array_agg(a.attname) from pg_catalog.pg_index as i
                inner join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
                where i.indrelid = rel and i.indisprimary
            ) is distinct from array[src.key_column] then pg_catalog.format('primary key (%I)', src.key_column)
            when not exists (
                select from pg_catalog.pg_attribute as a
                where
                    a.attrelid = rel and a.attname = src.content_column and not a.attisdropped
                    and a.atttypid in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
            ) then pg_catalog.format('text column %I', src.content_column)
            else (
                select pg_catalog.format('column %I', c.name)
                from pg_catalog.unnest(src.metadata_columns) as c (name)
                where not exists (
                    select from pg_catalog.pg_attribute as a
                    where a.attrelid = rel and a.attname = c.name and not a.attisdropped
                )
                limit 1
            )
        end;
        if problem is not null then
            raise exception 'hybrid_search: % is enabled for search with its %; to change that, call hybrid_search_disable first (and hybrid_search_enable after)',
                rel, problem
            using errcode = 'feature_not_supported';
        end if;
        if (select c.relkind from pg_catalog.pg_class as c where c.oid = rel) = 'p' then
            perform @extschema@._source_sync(src, false);
        end if;
    end loop;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-- (the linter's postgres dialect cannot parse CREATE EVENT TRIGGER)
-- noqa: disable=all
drop event trigger if exists hybrid_search_source_dropped;
create event trigger hybrid_search_source_dropped
on sql_drop
execute function @extschema@._source_dropped();

drop event trigger if exists hybrid_search_source_altered;
create event trigger hybrid_search_source_altered
on ddl_command_end
when tag in ('CREATE TABLE', 'ALTER TABLE', 'ALTER SCHEMA')
execute function @extschema@._source_altered();
-- noqa: enable=all

-- After ALTER EXTENSION UPDATE: partitions of tables enabled by an earlier
-- version get their triggers (and rows written straight to them are copied).
-- A fresh install has no enabled table.
do $block$
declare
    src @extschema@.hybrid_search_sources;
begin
    for src in
        select s.* from @extschema@.hybrid_search_sources as s
        inner join pg_catalog.pg_class as c on pg_catalog.to_regclass(s.source) = c.oid
        where c.relkind = 'p'
    loop
        perform @extschema@._source_sync(src, false);
    end loop;
end;
$block$;

-- source: sql/030_keyword_index.sql
-------------------------------------------------------------------------------
-- hybrid_search_keyword_postings
-- The BM25 inverted index of documents.fts, in the sparse index's layout
-- (011_sparse_index.sql): per lexeme id, impact-ordered blocks of packed doc
-- ids and float4 weights, where a weight is BM25's term-frequency part
-- computed with the build's average document length. idf is the query's
-- weight, so a BM25 score is a sparse dot product (keyword_index.py).
create table if not exists @extschema@.hybrid_search_keyword_postings (
    token_id integer not null,
    block integer not null,
    max_weight real not null,
    doc_ids bytea not null,
    weights bytea not null,
    primary key (token_id, block) include (max_weight)
);

comment on table @extschema@.hybrid_search_keyword_postings is
'BM25 inverted index: impact-ordered postings blocks per lexeme (rebuilt by hybrid_search_refresh)';

-------------------------------------------------------------------------------
-- hybrid_search_keyword_lexemes
-- The lexeme dictionary of the last build, with document frequencies.
create table if not exists @extschema@.hybrid_search_keyword_lexemes (
    lexeme text primary key,
    token_id integer not null unique,
    document_frequency integer not null
);

comment on table @extschema@.hybrid_search_keyword_lexemes is
'lexemes of documents.fts at the last keyword index build: id and document frequency';

-------------------------------------------------------------------------------
-- hybrid_search_keyword_segment
-- The statistics BM25 scores with, from the last build (one row). Documents
-- written since are scored with these too: statistics are stale between
-- refreshes, scores of new documents never are.
create table if not exists @extschema@.hybrid_search_keyword_segment (
    singleton boolean primary key default true check (singleton),
    built_at timestamptz not null,
    built_snapshot pg_snapshot not null,
    documents bigint not null,
    avg_length double precision not null,
    k1 double precision not null,
    b double precision not null,
    lexemes bigint not null,
    postings bigint not null,
    max_doc_id bigint not null,
    doc_id_bytes integer not null check (doc_id_bytes in (4, 8)),
    build_seconds double precision not null
);

comment on table @extschema@.hybrid_search_keyword_segment is
'BM25 statistics (documents, average length, k1, b) and snapshot of the last keyword index build';

-------------------------------------------------------------------------------
-- hybrid_search_keyword_changes
-- Documents inserted, deleted or whose fts changed since the build: searches
-- ignore their postings and score the live ones from documents.fts.
create table if not exists @extschema@.hybrid_search_keyword_changes (
    doc_id bigint primary key,
    xid xid8 not null default pg_catalog.pg_current_xact_id()
);

comment on table @extschema@.hybrid_search_keyword_changes is
'documents changed since the keyword index was built (scored from documents.fts until the next refresh)';

-- The keyword index's change list is kept like the sparse index's
-- (011_sparse_index.sql), for changes of fts.
create or replace trigger keyword_index_inserted
after insert on @extschema@.documents
referencing new table as new_rows
for each statement execute function @extschema@._index_note_changes(
    '@extschema@.hybrid_search_keyword_changes', 'fts', 'pg_catalog.tsvectorsend'
);

create or replace trigger keyword_index_updated
after update on @extschema@.documents
referencing old table as old_rows new table as new_rows
for each statement execute function @extschema@._index_note_changes(
    '@extschema@.hybrid_search_keyword_changes', 'fts', 'pg_catalog.tsvectorsend'
);

create or replace trigger keyword_index_deleted
after delete on @extschema@.documents
referencing old table as old_rows
for each statement execute function @extschema@._index_note_changes(
    '@extschema@.hybrid_search_keyword_changes', 'fts', 'pg_catalog.tsvectorsend'
);

create or replace trigger keyword_index_truncated
after truncate on @extschema@.documents
for each statement execute function @extschema@._index_truncated(
    '@extschema@.hybrid_search_keyword_postings',
    '@extschema@.hybrid_search_keyword_lexemes',
    '@extschema@.hybrid_search_keyword_changes',
    '@extschema@.hybrid_search_keyword_segment'
);

-------------------------------------------------------------------------------
-- hybrid_search_rebuild_keyword_index
-- Rebuilds lexeme dictionary, BM25 statistics and postings from one snapshot
-- with the configured bm25_k1 and bm25_b; readers keep the old index until
-- commit, and the changes that snapshot saw are forgotten.
create or replace function @extschema@.hybrid_search_rebuild_keyword_index(
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
    return sql_api.rebuild_keyword_index(plpy)
$python$
language plpython3u volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_rebuild_keyword_index is
'rebuild the BM25 keyword index and its statistics from documents (readers are not blocked)';

-------------------------------------------------------------------------------
-- _keyword_search_bm25
-- (id, score) best first: BM25 of documents.fts for the query's lexemes
-- (OR), through the keyword index, or by reading every document's fts with
-- statistics computed now when exact => true or the index was never built.
-- match is a tsquery documents must also satisfy.
create or replace function @extschema@._keyword_search_bm25(
    text_search_config text,
    query text,
    k integer,
    filter jsonb,
    match tsquery,
    exact boolean
) returns table (id bigint, score double precision)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.keyword_search(plpy, text_search_config, query, k, filter, match, exact)
$python$
language plpython3u stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp;

-- source: sql/031_evaluate.sql
-------------------------------------------------------------------------------
-- hybrid_search_run_row
-- One retrieved document of one method for one query: what
-- hybrid_search_score_run scores.
-- (a type has no CREATE OR REPLACE; upgrades change it with ALTER TYPE)
do $block$
begin
    if pg_catalog.to_regtype('@extschema@.hybrid_search_run_row') is null then
        create type @extschema@.hybrid_search_run_row as (
            query_id text,
            method text,
            rank integer,
            doc_id bigint
        );
    end if;
end;
$block$;

comment on type @extschema@.hybrid_search_run_row is
'a ranked result of one method for one query (input of hybrid_search_score_run)';

-------------------------------------------------------------------------------
-- hybrid_search_score_run
-- Mean nDCG@k (linear gains, as trec_eval and BEIR), recall@k and MRR@k per
-- method over every judged query: a query with at least one qrels row of
-- relevance > 0 (and among query_ids, the queries asked, unless that is
-- NULL). A judged query a method returned nothing for scores 0.
-- qrels needs columns query_id, doc_id and relevance (any types that cast to
-- text, bigint and integer).
create or replace function @extschema@.hybrid_search_score_run(
    run @extschema@.hybrid_search_run_row[],
    qrels regclass,
    k integer default 10,
    query_ids text[] default null
) returns table (
    method text,
    judged integer,
    ndcg double precision,
    recall double precision,
    mrr double precision
)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('hybrid_search_score_run', k, null);
    if qrels is null then
        raise exception 'hybrid_search_score_run: qrels must be a table'
        using errcode = 'invalid_parameter_value';
    end if;
    return query execute pg_catalog.format(
        $sql$
        with judgements as (
            select j.query_id::text as query_id, j.doc_id::bigint as doc_id,
                j.relevance::integer as relevance
            from %s as j
            where j.relevance::integer > 0 and ($3 is null or j.query_id::text = any($3))
        ),

        judged as (
            select j.query_id, count(*) as relevant from judgements as j group by j.query_id
        ),

        ideal as (
            select i.query_id, sum(i.relevance / pg_catalog.log(2, i.position + 1)) as idcg
            from (
                select
                    j.query_id, j.relevance::numeric as relevance,
                    row_number() over (partition by j.query_id order by j.relevance desc) as position
                from judgements as j
            ) as i
            where i.position <= $2
            group by i.query_id
        ),

        results as (
            select distinct on (r.method, r.query_id, r.doc_id) r.*
            from pg_catalog.unnest($1) as r
            where r.rank between 1 and $2
            order by r.method, r.query_id, r.doc_id, r.rank
        ),

        per_query as (
            select
                m.method,
                coalesce(sum(g.relevance / pg_catalog.log(2, r.rank + 1)), 0) / i.idcg as ndcg,
                count(g.doc_id)::double precision / q.relevant as recall,
                coalesce(1.0 / min(r.rank) filter (where g.doc_id is not null), 0) as mrr
            from (select distinct r.method from pg_catalog.unnest($1) as r) as m
            cross join judged as q
            inner join ideal as i on q.query_id = i.query_id
            left join results as r on m.method = r.method and q.query_id = r.query_id
            left join judgements as g on r.query_id = g.query_id and r.doc_id = g.doc_id
            group by m.method, q.query_id, q.relevant, i.idcg
        )

        select
            p.method,
            count(*)::integer,
            avg(p.ndcg)::double precision,
            avg(p.recall)::double precision,
            avg(p.mrr)::double precision
        from per_query as p
        group by p.method
        order by p.method
        $sql$,
        qrels
    ) using run, k, query_ids;
end;
$func$
language plpgsql stable parallel restricted security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_score_run is
'mean nDCG@k, recall@k and MRR@k per method of a run against judgements (query_id, doc_id, relevance)';

-------------------------------------------------------------------------------
-- hybrid_search_evaluate
-- Runs every query of `queries` (columns id, query) through each leg alone
-- and each fusion of hybrid_search, and scores them against `qrels` with
-- hybrid_search_score_run. Each query is embedded once (embed_batch), so
-- every method sees the same query vectors. Weights and fusion options are
-- hybrid_search's (NULL = its defaults).
create or replace function @extschema@.hybrid_search_evaluate(
    queries regclass,
    qrels regclass,
    k integer default 10,
    candidates integer default 100,
    rrf_k integer default 60,
    dense_weight double precision default null,
    sparse_weight double precision default null,
    keyword_weight double precision default null
) returns table (
    method text,
    judged integer,
    ndcg double precision,
    recall double precision,
    mrr double precision
)
as $func$
#variable_conflict use_column
declare
    ids text[];
    texts text[];
    q record;
    fusion text;
    run @extschema@.hybrid_search_run_row[] := '{}';
    bad integer;
begin
    perform @extschema@._check_search_arguments('hybrid_search_evaluate', k, null);
    if queries is null or qrels is null then
        raise exception 'hybrid_search_evaluate: queries and qrels must be tables'
        using errcode = 'invalid_parameter_value';
    end if;
    execute pg_catalog.format(
        'select array_agg(q.id::text order by q.id::text), array_agg(q.query::text order by q.id::text)'
        ' from %s as q',
        queries
    ) into ids, texts;
    bad := pg_catalog.array_position(ids, null);
    if bad is null then
        select i.o::integer into bad
        from pg_catalog.unnest(texts) with ordinality as i (query, o)
        where i.query is null or pg_catalog.btrim(i.query) = ''
        limit 1;
    end if;
    if bad is not null then
        raise exception 'hybrid_search_evaluate: queries table % has a row with %', queries,
            case when ids[bad] is null then 'a NULL id' else pg_catalog.format('no query text (id %s)', ids[bad]) end
        using
            errcode = 'null_value_not_allowed',
            hint = pg_catalog.format('give every row of %s an id and a non-empty query, or leave it out', queries);
    end if;
    for q in
        select i.id, i.query, e.dense, e.sparse
        from rows from (pg_catalog.unnest(ids), pg_catalog.unnest(texts)) with ordinality as i (id, query, ord)
        inner join @extschema@.embed_batch(texts) as e on i.ord = e.ord
    loop
        run := run
            || array(
                select row(q.id, 'dense', l.rank, l.id)::@extschema@.hybrid_search_run_row
                from @extschema@.dense_search(q.dense, k) as l
            )
            || array(
                select row(q.id, 'sparse', l.rank, l.id)::@extschema@.hybrid_search_run_row
                from @extschema@.sparse_search(q.sparse, k) as l
            )
            || array(
                select row(q.id, 'keyword', l.rank, l.id)::@extschema@.hybrid_search_run_row
                from @extschema@.keyword_search(q.query, k) as l
            );
        foreach fusion in array array['rrf', 'weighted', 'raw'] loop
            run := run || array(
                select row(
                    q.id, 'hybrid ' || fusion, row_number() over (order by h.score desc, h.id), h.id
                )::@extschema@.hybrid_search_run_row
                from @extschema@.hybrid_search(
                    q.query, q.dense, q.sparse, k,
                    fusion => fusion, dense_weight => dense_weight, sparse_weight => sparse_weight,
                    keyword_weight => keyword_weight, candidates => candidates, rrf_k => rrf_k
                ) as h
            );
        end loop;
    end loop;
    return query select * from @extschema@.hybrid_search_score_run(run, qrels, k, ids);
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_evaluate is
'nDCG@k, recall@k and MRR@k of each leg and each fusion over judged queries (id, query) and qrels';

-- source: sql/032_encoder_check.sql
-------------------------------------------------------------------------------
-- documents_model_idx
-- documents.model names the encoders that made a row's vectors; the index
-- lets a search check in two index probes that no row came from others.
create index if not exists documents_model_idx on @extschema@.documents (model);

-------------------------------------------------------------------------------
-- _check_query_model
-- A query embedded by other models than the rows would compare vectors of
-- different spaces: refuse it. Rows are made consistent again by
-- hybrid_search_set_model(..., reembed => true).
create or replace function @extschema@._check_query_model(caller text)
returns void
as $func$
declare
    current text := (select s.embedding_model from @extschema@.hybrid_search_settings as s);
    other text;
begin
    select d.model into other from @extschema@.documents as d where d.model < current limit 1;
    if other is null then
        select d.model into other from @extschema@.documents as d where d.model > current limit 1;
    end if;
    if other is not null then
        raise exception '%: documents were embedded by %, but queries are embedded by %',
            caller, other, current
        using
            errcode = 'object_not_in_prerequisite_state',
            hint = 'SELECT hybrid_search_set_model(...) with the models the rows were made by,'
            ' or re-embed them with reembed => true';
    end if;
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-- source: sql/090_check.sql
-------------------------------------------------------------------------------
-- hybrid_search_check
-- Verifies that everything derived from documents agrees with it: every row
-- embedded by the configured model (or queued, or in hybrid_search_errors: a
-- row that is none of these would never be embedded), fts =
-- to_tsvector(content), the dense
-- index valid, the sparse inverted index equal to documents.sparse for every
-- row not on its change list, the token statistics equal to the postings,
-- and no role under row-level security able to read the index. One row per
-- check: status 'ok', 'warning' (works, but slower) or 'error', and a detail
-- that names the rows and the fix. STABLE: one snapshot for all of it. Reads
-- every row and posting (memory grows with the index), so run it as the
-- owner, after a crash, a restore or an upgrade, not on every request.
create or replace function @extschema@.hybrid_search_check()
returns table (check_name text, status text, detail text)
as $python$
    import sys
    if 'hybrid_search' not in sys.modules:
        import ctypes  # no SQL in parallel mode: see plpython/hybrid_search/parallel.py
        if ctypes.CDLL(None).IsInParallelMode() & 0xFF:
            plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
        plpy.execute('select @extschema@.hybrid_search_load_python()')
    from hybrid_search import sql_api
    return sql_api.check(plpy)
$python$
language plpython3u stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_check is
'check that embeddings, fts, the dense and sparse indexes and the token statistics agree with documents';

-- source: sql/092_restore.sql
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
                'documents_fts_idx', 'documents_metadata_idx', 'documents_model_idx', 'documents_sparse_idx'
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
-- configuration (rows are restored before it), and rebuilds the sparse index
-- and its statistics; replays the row-level security, policies and indexes
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

-- source: sql/095_roles.sql
-------------------------------------------------------------------------------
-- _role_functions
-- Which functions each access level may execute, by name (all overloads).
-- 'search' covers the search legs, embedding and the helpers they call with
-- the caller's rights; 'write' adds none: the triggers that embed, queue and
-- copy enabled tables run as the owner (trigger functions need no EXECUTE
-- right). Everything else (configuration, model path, index rebuilds,
-- re-embedding, the queue, checks, grants) is for the extension owner only.
-- 099_privileges.sql revokes EXECUTE on every function from PUBLIC, so these
-- lists are the whole truth.
create or replace function @extschema@._role_functions(access text)
returns name[]
as $func$
    select case access
        when 'search' then array[
            'hybrid_search', 'dense_search', 'sparse_search', 'sparse_search_scan',
            'keyword_search', 'embed_dense', 'embed_sparse', 'embed', 'embed_batch',
            'sparse_dot', 'sparse_to_jsonb', 'sparse_entries', 'query_tokens', 'sparse_explain',
            'hybrid_search_model_info', 'hybrid_search_model_stats', 'hybrid_search_load_python',
            '_check_search_arguments', '_check_query_text', '_check_query_vector',
            '_sparse_search_index', '_dense_index_halfvec_dimensions',
            'keyword_search_scan', '_keyword_search_bm25', '_check_query_model', '_source_filter',
            'hybrid_search_evaluate', 'hybrid_search_score_run',
            'colbert_rerank', '_colbert_query', '_colbert_check_encoders', '_query_cache_prune',
            '_query_cache_put', '_query_cache_count'
        ]::name[]
        when 'write' then array[]::name[]
    end;
$func$
language sql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _sparse_index_relations
-- The relations derived from documents.sparse and documents.fts (the sparse
-- and keyword indexes). They hold every row's terms and weights, so
-- row-level security on documents does not protect them.
create or replace function @extschema@._sparse_index_relations()
returns regclass[]
as $func$
    select array[
        '@extschema@.hybrid_search_sparse_postings'::regclass,
        '@extschema@.hybrid_search_sparse_segment'::regclass,
        '@extschema@.hybrid_search_sparse_changes'::regclass,
        '@extschema@.hybrid_search_token_stats'::regclass,
        '@extschema@.hybrid_search_keyword_postings'::regclass,
        '@extschema@.hybrid_search_keyword_lexemes'::regclass,
        '@extschema@.hybrid_search_keyword_segment'::regclass,
        '@extschema@.hybrid_search_keyword_changes'::regclass
    ];
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_grant
-- Gives a role exactly what it needs to search ('search') or to search and
-- write documents ('write'), and takes back anything else it held on our
-- objects, so granting again after an upgrade or a change of level leaves
-- the level's privileges and nothing more (README: "Privilege map"). No
-- right on hybrid_search_config, the queue, the errors, the sequence or the
-- change lists; a writer may set documents.content and metadata only (the
-- vectors, fts, model, embedded_at, source and source_key are the system's,
-- written by triggers that run as the owner). If documents has row-level
-- security that applies to the role, the sparse and keyword index tables and
-- hybrid_search_token_stats are not granted, and revoked if they were (they
-- would show every tenant's token weights); the legs then scan documents
-- under the role's policies. Only the owner of the objects (or a superuser)
-- can grant, as with GRANT itself.
create or replace function @extschema@.hybrid_search_grant(role regrole, access text default 'search')
returns setof text
as $func$
declare
    role_name name := (select r.rolname from pg_catalog.pg_roles as r where r.oid = role);
    rls_applies boolean;
    stmt text;
begin
    if role is null or access is null or access not in ('search', 'write') then
        raise exception 'hybrid_search_grant: expected a role and ''search'' or ''write'', got % and %',
            coalesce(role::text, 'NULL'), coalesce(pg_catalog.quote_literal(access), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    select
        c.relrowsecurity
        and not r.rolbypassrls
        and not r.rolsuper
        and not pg_catalog.pg_has_role(role, c.relowner, 'USAGE')
    into rls_applies
    from pg_catalog.pg_class as c, pg_catalog.pg_roles as r
    where c.oid = '@extschema@.documents'::regclass and r.oid = role;

    for stmt in
        -- first take back whatever the role holds on our tables, sequence and
        -- functions beyond this level (earlier versions gave writers the
        -- queue, the errors, the sequence and every column of documents)
        select pg_catalog.format('revoke all on table %s from %I', r.rel, role_name)
        from pg_catalog.unnest(
            array[
                '@extschema@.documents'::regclass, '@extschema@.hybrid_search_queue'::regclass,
                '@extschema@.hybrid_search_errors'::regclass
            ] || @extschema@._sparse_index_relations()
        ) as r (rel)
        union all
        select pg_catalog.format(
            'revoke all on sequence %s from %I', '@extschema@.documents_id_seq'::regclass, role_name
        )
        union all
        select pg_catalog.format('revoke execute on function %s from %I', p.oid::regprocedure, role_name)
        from pg_catalog.pg_proc as p
        where
            p.pronamespace = '@extschema@'::regnamespace
            and not (
                p.proname = any(@extschema@._role_functions('search'))
                or (access = 'write' and p.proname = any(@extschema@._role_functions('write')))
            )
            and exists (
                select from pg_catalog.aclexplode(p.proacl) as a
                where a.grantee = role and a.privilege_type = 'EXECUTE'
            )
        union all
        select pg_catalog.format('grant usage on schema %I to %I', n.nspname, role_name)
        from pg_catalog.pg_namespace as n
        where n.oid in (
            select e.extnamespace from pg_catalog.pg_extension as e
            where e.extname in ('hybrid_search', 'vector')
        )
        union all
        select pg_catalog.format('grant execute on function %s to %I', p.oid::regprocedure, role_name)
        from pg_catalog.pg_proc as p
        where
            p.pronamespace = '@extschema@'::regnamespace
            and (
                p.proname = any(@extschema@._role_functions('search'))
                or (access = 'write' and p.proname = any(@extschema@._role_functions('write')))
            )
        union all
        select pg_catalog.format('grant select on table %s to %I', '@extschema@.documents'::regclass, role_name)
        union all
        select pg_catalog.format('grant select on table %s to %I', r.rel, role_name)
        from pg_catalog.unnest(@extschema@._sparse_index_relations()) as r (rel)
        where not rls_applies
        union all
        -- the writer's columns; the triggers fill the rest as the owner
        select pg_catalog.format(
            'grant insert (content, metadata), update (content, metadata), delete on table %s to %I',
            '@extschema@.documents'::regclass, role_name
        )
        where access = 'write'
    loop
        execute stmt;
        return next stmt;
    end loop;
    if rls_applies then
        raise notice 'hybrid_search_grant: row-level security on documents applies to %: the sparse index is not granted, sparse_search scans documents under its policies',
            role_name;
    end if;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_grant is
'give a role exactly what searching (''search'') or writing documents (''write'') needs; returns the statements';

-------------------------------------------------------------------------------
-- hybrid_search_revoke
-- Takes back everything hybrid_search_grant can give, whatever the level.
create or replace function @extschema@.hybrid_search_revoke(role regrole)
returns setof text
as $func$
declare
    role_name name := (select r.rolname from pg_catalog.pg_roles as r where r.oid = role);
    stmt text;
begin
    if role is null then
        raise exception 'hybrid_search_revoke: role must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    for stmt in
        select pg_catalog.format('revoke execute on function %s from %I', p.oid::regprocedure, role_name)
        from pg_catalog.pg_proc as p
        where
            p.pronamespace = '@extschema@'::regnamespace
            and (
                p.proname = any(
                    @extschema@._role_functions('search') || @extschema@._role_functions('write')
                )
                or exists (
                    select from pg_catalog.aclexplode(p.proacl) as a
                    where a.grantee = role and a.privilege_type = 'EXECUTE'
                )
            )
        union all
        select pg_catalog.format('revoke all on table %s from %I', r.rel, role_name)
        from pg_catalog.unnest(
            array[
                '@extschema@.documents'::regclass, '@extschema@.hybrid_search_queue'::regclass,
                '@extschema@.hybrid_search_errors'::regclass
            ] || @extschema@._sparse_index_relations()
        ) as r (rel)
        union all
        select pg_catalog.format(
            'revoke all on sequence %s from %I', '@extschema@.documents_id_seq'::regclass, role_name
        )
    loop
        execute stmt;
        return next stmt;
    end loop;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_revoke is
'revoke everything hybrid_search_grant gives (schema usage is left alone); returns the REVOKEs run';

-- source: sql/099_privileges.sql
-------------------------------------------------------------------------------
-- privileges
-- Every role may read the settings (embedding runs with the caller's rights
-- and must find the model); only the extension owner may change them. The
-- corpus and its statistics are granted explicitly by the DBA.
revoke all on @extschema@.hybrid_search_config from public;
grant select on @extschema@.hybrid_search_config to public;
grant select on @extschema@.hybrid_search_settings to public;
revoke all on @extschema@.hybrid_search_token_stats from public;
-- writes to documents look up their source table's embed mode
grant select on @extschema@.hybrid_search_sources to public;
-- the shared query cache: row-level security shows each role its own rows only
revoke all on @extschema@.hybrid_search_query_cache from public;
grant select, insert on @extschema@.hybrid_search_query_cache to public;
grant select on @extschema@.hybrid_search_query_cache_stats to public;

-- No function is executable by PUBLIC: hybrid_search_grant() gives a role
-- exactly the functions its access level needs. (Objects created so far in
-- this script are already members of the extension.)
do $block$
declare
    f regprocedure;
begin
    for f in
        select d.objid::regprocedure
        from pg_catalog.pg_depend as d
        inner join pg_catalog.pg_extension as e on d.refobjid = e.oid
        where
            d.classid = 'pg_catalog.pg_proc'::regclass
            and d.refclassid = 'pg_catalog.pg_extension'::regclass
            and d.deptype = 'e'
            and e.extname = 'hybrid_search'
    loop
        execute pg_catalog.format('revoke execute on routine %s from public', f);
    end loop;
end;
$block$;

-- After ALTER EXTENSION UPDATE: a role granted a level by hybrid_search_grant
-- before gets that level as this version defines it (what was added, and
-- nothing it no longer includes). (A fresh install has no such role.) The
-- level is read back from the grants themselves: every level can read
-- documents, and a writer may insert into it. (Roles given single functions
-- by this script, such as pg_monitor, hold no right on documents and are
-- left alone.)
do $block$
declare
    granted record;
begin
    for granted in
        select
            a.grantee::regrole as role,
            case
                when pg_catalog.has_any_column_privilege(
                    a.grantee, '@extschema@.documents'::regclass, 'INSERT'
                ) then 'write'
                else 'search'
            end as access
        from pg_catalog.pg_class as c
        cross join lateral pg_catalog.aclexplode(c.relacl) as a
        where
            c.oid = '@extschema@.documents'::regclass
            and a.privilege_type = 'SELECT'
            and a.grantee <> 0
            and a.grantee <> c.relowner
    loop
        perform @extschema@.hybrid_search_grant(granted.role, granted.access);
    end loop;
end;
$block$;
