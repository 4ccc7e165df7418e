-------------------------------------------------------------------------------
-- hybrid_search_configure
-- Change settings by name; arguments left NULL keep their current value. A
-- new text search configuration rewrites documents.fts (and so the BM25
-- index); new BM25 parameters and bm25_statistics apply to the next query. colbert_store => true (BGE-M3 only)
-- makes writes store ColBERT vectors from now on (existing rows get them when
-- re-embedded; until then colbert_rerank computes theirs); false clears the
-- stored ones. A value out of range names its argument and the rule it
-- breaks (hybrid_search_config's CHECK constraint). Runs with the
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
    query_cache_entries integer default null,
    pack_weights boolean default null,
    bm25_statistics text default null
) returns setof @extschema@.hybrid_search_settings
as $func$
declare
    before @extschema@.hybrid_search_settings;
    after @extschema@.hybrid_search_settings;
    violated name;
begin
    select * into before from @extschema@.hybrid_search_settings;
    begin
        insert into @extschema@.hybrid_search_config as c (
            device, dtype, batch_size, max_length, num_threads, text_search_config, python_venv,
            max_content_chars, embed_mode, queue_max_attempts, queue_retry_seconds, bm25_k1, bm25_b,
            colbert_store, query_threads, query_cache_entries, pack_weights, bm25_statistics
        )
        values (
            device, dtype, batch_size, max_length, num_threads, text_search_config, python_venv,
            max_content_chars, embed_mode, queue_max_attempts, queue_retry_seconds, bm25_k1, bm25_b,
            colbert_store, query_threads, query_cache_entries, pack_weights, bm25_statistics
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
            query_cache_entries = coalesce(excluded.query_cache_entries, c.query_cache_entries),
            pack_weights = coalesce(excluded.pack_weights, c.pack_weights),
            bm25_statistics = coalesce(excluded.bm25_statistics, c.bm25_statistics);
    exception when check_violation then
        -- the argument and its rule, not the table's constraint name
        get stacked diagnostics violated = constraint_name;
        raise exception 'hybrid_search_configure: % must satisfy %',
            pg_catalog.regexp_replace(violated, '^hybrid_search_config_(.*)_check$', '\1'),
            (
                select pg_catalog.pg_get_constraintdef(k.oid) from pg_catalog.pg_constraint as k
                where k.conrelid = '@extschema@.hybrid_search_config'::regclass and k.conname = violated
            )
        using errcode = 'check_violation';
    end;
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
    return query select * from @extschema@.hybrid_search_settings;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_configure is
'change model settings (NULL keeps the current value); the model itself is set with hybrid_search_set_model';
