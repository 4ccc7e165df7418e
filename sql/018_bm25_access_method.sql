-------------------------------------------------------------------------------
-- BM25 on the sparse_inverted access method (extension/sparse_bm25.c).
-- CREATE INDEX ... USING sparse_inverted (fts tsvector_bm25_ops) serves
-- ORDER BY fts <&> to_bm25query(index, query) as an ordinary index scan, in
-- exactly the order of a sequential scan. The index keeps the corpus
-- statistics (non-null rows, their total length, each term's document
-- frequency), updated by every insert. Rows deleted or updated away still
-- count until VACUUM merges them out, as Lucene counts deleted documents
-- until a merge; an update adds the new version at once.

-------------------------------------------------------------------------------
-- bm25query
-- A query with everything its BM25 needs, resolved once by to_bm25query():
-- per query lexeme its text, hash, document frequency and weight (idf times
-- its repetitions), and k1, b and the index's average row length. Its text
-- form is JSON, for reading; it cannot be typed in (it stands for an index's
-- statistics at one moment).
do $block$
begin
    if not exists (
        select from pg_catalog.pg_type as t
        where t.typname = 'bm25query' and t.typnamespace = '@extschema@'::regnamespace
    ) then
        create type @extschema@.bm25query;
        create function @extschema@.bm25query_in(cstring) returns @extschema@.bm25query
        as '$libdir/hybrid_search', 'bm25query_in'
        language c immutable strict parallel safe;
        create function @extschema@.bm25query_out(@extschema@.bm25query) returns cstring
        as '$libdir/hybrid_search', 'bm25query_out'
        language c immutable strict parallel safe;
        create type @extschema@.bm25query (
            input = @extschema@.bm25query_in,
            output = @extschema@.bm25query_out,
            internallength = variable,
            alignment = double,
            storage = extended
        );
        comment on type @extschema@.bm25query is
        'a BM25 query resolved against an index''s statistics (to_bm25query)';
    end if;
end;
$block$;

-------------------------------------------------------------------------------
-- _bm25query
-- The lexemes of query (a tsvector: its positions count repetitions)
-- weighted with the statistics the index holds now. Needs SELECT on the
-- index's table.
create or replace function @extschema@._bm25query(
    index regclass, query tsvector, k1 double precision, b double precision
) returns @extschema@.bm25query
as '$libdir/hybrid_search', 'bm25query_make'
language c stable strict parallel safe
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._bm25query(regclass, tsvector, double precision, double precision) is
'a bm25query of the tsvector''s lexemes with the statistics of a sparse_inverted index over tsvector';

-------------------------------------------------------------------------------
-- to_bm25query
-- The query text's lexemes under the text search configuration (by default
-- the one documents.fts is built with), weighted with the index's statistics
-- and hybrid_search_settings' bm25_k1 and bm25_b.
create or replace function @extschema@.to_bm25query(
    index regclass, query text, config regconfig default null
) returns @extschema@.bm25query
as $func$
    select @extschema@._bm25query(
        index,
        pg_catalog.to_tsvector(coalesce(config, s.text_search_config), query),
        s.bm25_k1,
        s.bm25_b
    )
    from @extschema@.hybrid_search_settings as s
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.to_bm25query(regclass, text, regconfig) is
'a BM25 query: the text''s lexemes weighted with a sparse_inverted tsvector index''s statistics';

-------------------------------------------------------------------------------
-- bm25_distance, <&>
-- Minus the row's BM25 score for the query (ascending = best first), from
-- the row's own lexemes: a pure function of its two arguments.
create or replace function @extschema@.bm25_distance(
    document tsvector, query @extschema@.bm25query
) returns double precision
as '$libdir/hybrid_search', 'bm25_distance'
language c immutable strict parallel safe
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.bm25_distance(tsvector, @extschema@.bm25query) is
'minus the BM25 score of a tsvector for a bm25query (the <&> operator)';

do $block$
begin
    if not exists (
        select from pg_catalog.pg_operator as o
        where o.oprname = '<&>' and o.oprnamespace = '@extschema@'::regnamespace
        and o.oprleft = 'pg_catalog.tsvector'::regtype
    ) then
        create operator @extschema@.<&> (
            leftarg = tsvector,
            rightarg = @extschema@.bm25query,
            function = @extschema@.bm25_distance
        );
        comment on operator @extschema@.<&> (tsvector, @extschema@.bm25query) is
        'minus the BM25 score (ORDER BY it for the best matches first)';
    end if;
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
-- documents_fts_bm25_idx: the keyword leg's index.
create index if not exists documents_fts_bm25_idx on @extschema@.documents
using sparse_inverted (fts @extschema@.tsvector_bm25_ops);
