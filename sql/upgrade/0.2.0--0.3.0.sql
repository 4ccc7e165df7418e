-------------------------------------------------------------------------------
-- upgrade 0.2.0 -> 0.3.0
-- Both inverted-index legs are index scans of sparse_inverted indexes:
-- documents_sparse_idx (016) and documents_fts_bm25_idx (018, created by the
-- script, its BM25 statistics kept by every write). The table-based indexes,
-- their change lists, triggers and rebuilds go.
-- hybrid_search_token_stats is computed from documents.sparse instead of
-- those postings; the script creates it again. An upgrade from 0.1.0 runs
-- 0.1.0--0.2.0 first, which already dropped the triggers: hence IF EXISTS.
drop materialized view if exists @extschema@.hybrid_search_token_stats;
drop trigger if exists sparse_index_inserted on @extschema@.documents;
drop trigger if exists sparse_index_updated on @extschema@.documents;
drop trigger if exists sparse_index_deleted on @extschema@.documents;
drop trigger if exists sparse_index_truncated on @extschema@.documents;
drop function if exists @extschema@.hybrid_search_rebuild_sparse_index();
drop function if exists @extschema@._sparse_search_index(@extschema:vector@.sparsevec, integer, jsonb);
drop table if exists @extschema@.hybrid_search_sparse_postings;
drop table if exists @extschema@.hybrid_search_sparse_segment;
drop table if exists @extschema@.hybrid_search_sparse_changes;
drop trigger if exists keyword_index_inserted on @extschema@.documents;
drop trigger if exists keyword_index_updated on @extschema@.documents;
drop trigger if exists keyword_index_deleted on @extschema@.documents;
drop trigger if exists keyword_index_truncated on @extschema@.documents;
drop function if exists @extschema@.hybrid_search_rebuild_keyword_index();
drop function if exists @extschema@._keyword_search_bm25(text, text, integer, jsonb, tsquery, boolean);
drop function if exists @extschema@._index_note_changes();
drop table if exists @extschema@.hybrid_search_keyword_postings;
drop table if exists @extschema@.hybrid_search_keyword_lexemes;
drop table if exists @extschema@.hybrid_search_keyword_segment;
drop table if exists @extschema@.hybrid_search_keyword_changes;

-- Posting blocks and the metapage gained BM25 fields (zero for a sparsevec
-- index), and the index a metadata column: the script creates it again in
-- this library's format.
drop index if exists @extschema@.documents_sparse_idx;

-- pack_weights: bf16 weights packed for oneDNN in each backend (bge_m3.py). The
-- setting's column, and hybrid_search_configure gains its parameter: the script
-- creates the new signature. From 0.1.0, 0.1.0--0.2.0 dropped its own signature
-- and the 0.2.0 one was never created: hence IF EXISTS.
alter table @extschema@.hybrid_search_config add column pack_weights boolean;
-- bm25_statistics: the owner's opt-in to the index's BM25 statistics for roles
-- under row-level security (026_keyword_search.sql)
alter table @extschema@.hybrid_search_config add column bm25_statistics text
check (bm25_statistics in ('visible', 'index'));
drop function if exists @extschema@.hybrid_search_configure(
    text, text, integer, integer, integer, regconfig, text, integer, text, integer, integer,
    double precision, double precision, boolean, integer, integer
);
