-------------------------------------------------------------------------------
-- BM25 on the sparse_inverted access method (extension/sparse_bm25.c).
-- CREATE INDEX ... USING sparse_inverted (fts tsvector_bm25_ops) serves
-- ORDER BY fts <&> to_bm25query(index, query) as an ordinary index scan, in
-- exactly the order of a sequential scan. The index keeps the corpus
-- statistics (non-null rows, their total length, each term's document
-- frequency), updated by every insert. Rows deleted or updated away still
-- count until VACUUM merges them out, as Lucene counts deleted documents
-- until a merge; an update adds the new version at once.

do $block$
begin
    if not exists (
        select from pg_catalog.pg_opclass as c
        inner join pg_catalog.pg_am as a on c.opcmethod = a.oid
        where a.amname = 'sparse_inverted' and c.opcname = 'tsvector_bm25_ops'
    ) then
        create operator class @extschema@.tsvector_bm25_ops
        default for type tsvector using sparse_inverted as
        operator 1 @extschema@.<&> (tsvector, @extschema@.bm25query) for order by pg_catalog.float_ops;
    end if;
end;
$block$;

-------------------------------------------------------------------------------
-- documents_fts_bm25_idx: the keyword leg's index, with metadata as
-- documents_sparse_idx has it.
create index if not exists documents_fts_bm25_idx on @extschema@.documents
using sparse_inverted (fts @extschema@.tsvector_bm25_ops, metadata @extschema@.jsonb_filter_ops);
