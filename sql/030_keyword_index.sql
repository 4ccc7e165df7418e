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
