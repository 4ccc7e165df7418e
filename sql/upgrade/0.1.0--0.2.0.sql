-------------------------------------------------------------------------------
-- upgrade 0.1.0 -> 0.2.0
-- What the re-runnable install script cannot do by itself: objects whose
-- shape changed (ALTER TABLE/TYPE), functions whose signature or result type
-- changed (dropped here, created again by the script), renamed objects.
-- tests/test_upgrade.py compares an upgraded database with a fresh install.

-- The sparse and keyword indexes share one change-list trigger function
-- (_index_note_changes, _index_truncated); the triggers are created again by
-- the script, on the shared functions.
drop trigger sparse_index_inserted on @extschema@.documents;
drop trigger sparse_index_updated on @extschema@.documents;
drop trigger sparse_index_deleted on @extschema@.documents;
drop trigger sparse_index_truncated on @extschema@.documents;
drop trigger keyword_index_inserted on @extschema@.documents;
drop trigger keyword_index_updated on @extschema@.documents;
drop trigger keyword_index_deleted on @extschema@.documents;
drop trigger keyword_index_truncated on @extschema@.documents;
drop function @extschema@._sparse_index_note_changes();
drop function @extschema@._sparse_index_truncated();
drop function @extschema@._keyword_index_note_changes();
drop function @extschema@._keyword_index_truncated();

-- ColBERT re-ranking: a configuration switch, stored vectors, result columns
alter table @extschema@.hybrid_search_config add column colbert_store boolean;
alter table @extschema@.documents add column colbert bytea;
alter type @extschema@.hybrid_search_result
add attribute colbert_rank integer,
add attribute colbert_score double precision;

-- functions that gained parameters (colbert_rerank, colbert_weight,
-- colbert_store): the script creates the new signatures
drop function @extschema@.hybrid_search(
    text, @extschema:vector@.vector, @extschema:vector@.sparsevec, integer, text,
    double precision, double precision, double precision, integer, jsonb, integer, integer, regclass
);
drop function @extschema@.hybrid_search(
    text, integer, text, double precision, double precision, double precision, integer, jsonb,
    integer, integer, regclass
);
drop function @extschema@.hybrid_search_configure(
    text, text, integer, integer, integer, regconfig, text, integer, text, integer, integer,
    double precision, double precision
);

-- Automatic number format (dtype 'auto', the new default), query threads and the
-- shared query cache's size; hybrid_search_model_info reports the format chosen
alter table @extschema@.hybrid_search_config
drop constraint hybrid_search_config_dtype_check,
add constraint hybrid_search_config_dtype_check
check (dtype in ('auto', 'fp32', 'fp16', 'bf16', 'int8')),
add column query_threads integer check (query_threads between 0 and 1024),
add column query_cache_entries integer check (query_cache_entries between 0 and 100000000);
drop function @extschema@.hybrid_search_model_info();
