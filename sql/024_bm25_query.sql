-------------------------------------------------------------------------------
-- BM25 queries (extension/sparse_bm25.c): the bm25query type, its makers and
-- the <&> operator that scores a tsvector with one. The index that serves
-- ORDER BY fts <&> q is in 018_bm25_access_method.sql.

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
        language c immutable strict parallel safe
        set search_path to pg_catalog, pg_temp;
        comment on function @extschema@.bm25query_in(cstring) is
        'input of bm25query: refuses (a bm25query is made by to_bm25query)';
        create function @extschema@.bm25query_out(@extschema@.bm25query) returns cstring
        as '$libdir/hybrid_search', 'bm25query_out'
        language c immutable strict parallel safe
        set search_path to pg_catalog, pg_temp;
        comment on function @extschema@.bm25query_out(@extschema@.bm25query) is
        'output of bm25query: JSON with k1, b, the average length and every lexeme''s df and weight';
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
-- index's table and no row-level security there (the statistics count every
-- row: they would tell a role which words the rows it cannot see use), unless
-- the index is partial with exactly the role's policies as its predicate
-- (_bm25_policy_index). PARALLEL RESTRICTED: the proof evaluates the
-- policies' stable functions, which may be a user's parallel-unsafe ones.
create or replace function @extschema@._bm25query(
    index regclass, query tsvector, k1 double precision, b double precision
) returns @extschema@.bm25query
as '$libdir/hybrid_search', 'bm25query_make'
language c stable strict parallel restricted
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._bm25query(regclass, tsvector, double precision, double precision) is
'a bm25query of the tsvector''s lexemes with the statistics of a sparse_inverted index over tsvector';

-------------------------------------------------------------------------------
-- _bm25_policy_index
-- For a role under row-level security on the index's table: a valid partial
-- index indexing what this one does whose predicate is exactly the role's
-- policies (extension/sparse_policy.c proves both implications with the
-- planner's prover), or NULL. Its statistics count only the role's rows, so
-- _bm25query gives them to the role; NULL without row-level security.
-- PARALLEL RESTRICTED, as _bm25query.
create or replace function @extschema@._bm25_policy_index(index regclass)
returns regclass
as '$libdir/hybrid_search', 'bm25_policy_index'
language c stable strict parallel restricted
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._bm25_policy_index(regclass) is
'a partial copy of a BM25 index whose predicate is exactly the calling role''s row-level-security policies, or NULL';

-------------------------------------------------------------------------------
-- _bm25query_policy_rows
-- For a role under row-level security whose policies come to one condition
-- "expression op constant" (tenant = 3, or metadata->>'tenant' = current_user
-- once evaluated) with a btree on that expression: the lexemes of query
-- weighted with the statistics of the rows that btree names for it, counted
-- in the index (extension/sparse_bm25.c: its row list's lengths and the
-- query lexemes' postings, no table row). They count the role's rows as an
-- index does: versions deleted or updated away count until VACUUM, no other
-- tenant's row ever. NULL when the policies are not such a condition, no such
-- btree exists, the rows' TIDs (8 bytes each) exceed work_mem, no policy
-- applies, or the index keeps no row lengths (one written by hybrid_search
-- 0.2.0 or earlier: REINDEX). PARALLEL RESTRICTED, as _bm25query.
create or replace function @extschema@._bm25query_policy_rows(
    index regclass, query tsvector, k1 double precision, b double precision
) returns @extschema@.bm25query
as '$libdir/hybrid_search', 'bm25query_policy_rows'
language c stable strict parallel restricted
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._bm25query_policy_rows(
    regclass, tsvector, double precision, double precision
) is
'a bm25query with the statistics of the calling role''s rows, counted in the index over the rows '
'a btree on its policy''s expression names, or NULL';

-------------------------------------------------------------------------------
-- _bm25query_statistics
-- The lexemes of query weighted with statistics given by the caller: rows,
-- their total length, and the df of each lexeme (0 for one not listed). What
-- a role under row-level security uses, with the statistics of the rows it
-- sees.
create or replace function @extschema@._bm25query_statistics(
    query tsvector,
    k1 double precision,
    b double precision,
    documents bigint,
    total_length double precision,
    lexemes text[],
    dfs bigint[]
) returns @extschema@.bm25query
as '$libdir/hybrid_search', 'bm25query_with_statistics'
language c immutable strict parallel safe
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._bm25query_statistics(
    tsvector, double precision, double precision, bigint, double precision, text[], bigint[]
) is
'a bm25query of the tsvector''s lexemes with the statistics given (rows, total length, df per lexeme)';

-------------------------------------------------------------------------------
-- _bm25_visible_statistics
-- An aggregate over rows' fts: {rows, their total length, the df of each of
-- query's lexemes in query's order} as bigint[], what _bm25query_statistics
-- takes; NULL over no rows. Counted in C, one binary search per query lexeme
-- and row, for a role under row-level security (_bm25query_rows). No SET
-- clause, as for bm25_distance below.
create or replace function @extschema@._bm25_visible_statistics_add(
    state bigint[], fts tsvector, query tsvector
) returns bigint[]
as '$libdir/hybrid_search', 'bm25_visible_statistics_add'
language c immutable parallel safe;

comment on function @extschema@._bm25_visible_statistics_add(bigint[], tsvector, tsvector) is
'transition of _bm25_visible_statistics: one more row counted';

-- in a DO block: sqlfluff does not parse CREATE AGGREGATE
do $block$
begin
    create or replace aggregate @extschema@._bm25_visible_statistics(fts tsvector, query tsvector) (
        sfunc = @extschema@._bm25_visible_statistics_add,
        stype = bigint[],
        parallel = safe
    );
end;
$block$;

comment on aggregate @extschema@._bm25_visible_statistics (tsvector, tsvector) is
'BM25 statistics of the rows aggregated: rows, total length, df of each query lexeme';

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
language sql stable parallel restricted security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.to_bm25query(regclass, text, regconfig) is
'a BM25 query: the text''s lexemes weighted with a sparse_inverted tsvector index''s statistics';

-------------------------------------------------------------------------------
-- bm25_distance, <&>
-- Minus the row's BM25 score for the query (ascending = best first), from
-- the row's own lexemes: a pure function of its two arguments. It runs once
-- a row (the index scan's recheck, a query's projection) and its C resolves
-- no name, so it has no SET clause: one would save and restore the session's
-- settings at every call (14% of a 100-row BM25 scan).
create or replace function @extschema@.bm25_distance(
    document tsvector, query @extschema@.bm25query
) returns double precision
as '$libdir/hybrid_search', 'bm25_distance'
language c immutable strict parallel safe;

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
end;
$block$;
