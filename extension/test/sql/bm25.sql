-- BM25 on sparse_inverted: tsvector <&> bm25query in exact order through the
-- index, the statistics the index keeps, writes, VACUUM, the check function
-- and hostile inputs. Every comparison is against the same query without the
-- index (a sequential scan) or a BM25 computed here in SQL, as a boolean.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hybrid_search CASCADE;
RESET client_min_messages;
SET search_path = public;

-- deterministic pseudo-random documents: 0..30 words out of 200 (repeats
-- make tf > 1), some NULL, some empty, some without positions
CREATE FUNCTION pg_temp.doc(seed int) RETURNS tsvector LANGUAGE sql AS $$
    SELECT CASE
        WHEN seed % 97 = 0 THEN NULL
        WHEN seed % 89 = 0 THEN ''::tsvector
        WHEN seed % 83 = 0 THEN strip(to_tsvector('simple', 'w' || seed % 7 || ' w' || seed % 11))
        ELSE to_tsvector('simple', (
            SELECT string_agg('w' || ((seed * 31 + j * j * 17 + j * seed) % 200), ' ')
            FROM generate_series(1, seed % 31) AS j))
    END
$$;

CREATE TABLE docs (id int PRIMARY KEY, tenant int, fts tsvector);
INSERT INTO docs SELECT i, i % 10, pg_temp.doc(i) FROM generate_series(1, 3000) AS i;
CREATE INDEX docs_idx ON docs USING sparse_inverted (fts);
SELECT (sparse_inverted_check('docs_idx') ->> 'consistent')::bool AS consistent;

-- the statistics: non-null rows and their total length
CREATE FUNCTION pg_temp.stats_ok() RETURNS bool LANGUAGE sql AS $$
    SELECT (c ->> 'documents')::bigint = (SELECT count(*) FROM docs WHERE fts IS NOT NULL)
        AND (c ->> 'total_length')::bigint = (
            SELECT coalesce(sum(coalesce(cardinality(u.positions), 1)), 0)
            FROM docs, unnest(fts) AS u)
    FROM sparse_inverted_check('docs_idx') AS c
$$;
SELECT pg_temp.stats_ok() AS stats_after_build;

CREATE FUNCTION pg_temp.q(query text) RETURNS bm25query LANGUAGE sql STABLE AS $$
    SELECT _bm25query('docs_idx', to_tsvector('simple', query), 1.2, 0.75)
$$;

-- the query value: lexemes, df, weights
SELECT pg_temp.q('w1 w1 w5 nothing');

-- the plan
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM docs ORDER BY fts <&> pg_temp.q('w1') LIMIT 5;
RESET enable_seqscan;

-- <&> equals a BM25 computed here from the rows' lexemes and the index's
-- statistics (N, average length, df of each lexeme)
CREATE FUNCTION pg_temp.bm25_ok(query text) RETURNS bool LANGUAGE sql AS $$
    WITH q AS (SELECT pg_temp.q(query) AS q),
    stats AS (
        SELECT count(*)::float8 AS n,
            (SELECT sum(coalesce(cardinality(u.positions), 1)) FROM docs, unnest(fts) AS u)::float8
                / count(*) AS avgdl
        FROM docs WHERE fts IS NOT NULL),
    qlex AS (
        SELECT u.lexeme, coalesce(cardinality(u.positions), 1) AS reps
        FROM unnest(to_tsvector('simple', query)) AS u),
    df AS (
        SELECT l.lexeme, l.reps, (SELECT count(*) FROM docs WHERE fts @@ l.lexeme::tsquery) AS df
        FROM qlex AS l),
    expected AS (
        SELECT d.id, sum(df.reps * ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5))
            * t.tf * 2.2 / (t.tf + 1.2 * (1 - 0.75 + 0.75 * len.len / s.avgdl))) AS score
        FROM docs AS d
        CROSS JOIN stats AS s
        CROSS JOIN LATERAL (SELECT sum(coalesce(cardinality(u.positions), 1)) AS len FROM unnest(d.fts) AS u) AS len
        CROSS JOIN LATERAL (SELECT u.lexeme, coalesce(cardinality(u.positions), 1) AS tf FROM unnest(d.fts) AS u) AS t
        JOIN df ON df.lexeme = t.lexeme
        GROUP BY d.id)
    SELECT bool_and(abs(-(d.fts <&> q.q) - coalesce(e.score, 0)) <= 1e-9 * greatest(1, abs(e.score)))
    FROM docs AS d CROSS JOIN q LEFT JOIN expected AS e ON e.id = d.id
    WHERE d.fts IS NOT NULL
$$;
SELECT pg_temp.bm25_ok('w1 w7 w7 w150') AS bm25_exact, pg_temp.bm25_ok('w3') AS bm25_exact_one;

-- top-k distances through the index equal the sequential scan's
CREATE FUNCTION pg_temp.same(query text, k int, flt int DEFAULT NULL) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
    q bm25query := pg_temp.q(query);
    a float8[];
    b float8[];
    line text;
    plan text := '';
BEGIN
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_bitmapscan = off;
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) SELECT fts <&> $1 FROM docs'
        ' WHERE $2::int IS NULL OR tenant = $2 ORDER BY fts <&> $1 LIMIT $3' USING q, flt, k LOOP
        plan := plan || line;
    END LOOP;
    IF position('docs_idx' in plan) = 0 THEN
        RAISE EXCEPTION 'not an index scan: %', plan;
    END IF;
    SELECT array_agg(d) INTO a FROM (
        SELECT fts <&> q AS d FROM docs WHERE flt IS NULL OR tenant = flt
        ORDER BY fts <&> q LIMIT k) AS s;
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_indexscan = off;
    SELECT array_agg(d) INTO b FROM (
        SELECT fts <&> q AS d FROM docs WHERE flt IS NULL OR tenant = flt
        ORDER BY fts <&> q LIMIT k) AS s;
    RETURN a IS NOT DISTINCT FROM b;
END
$$;

CREATE FUNCTION pg_temp.words(seed int) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg('w' || ((seed * 13 + j * 7) % 210), ' ') FROM generate_series(1, 1 + seed % 5) AS j
$$;

SELECT bool_and(pg_temp.same(pg_temp.words(s), k)) AS all_same
FROM generate_series(1, 40) AS s, unnest(ARRAY[1, 10, 100, 1000, 3000]) AS k;

-- with a filter (10%)
SELECT bool_and(pg_temp.same(pg_temp.words(s), k, s % 10)) AS filtered_same
FROM generate_series(1, 20) AS s, unnest(ARRAY[10, 100, 400]) AS k;

-- small batches: the scan goes on batch after batch in exact order
SET hybrid_search.sparse_batch_size = 1;
SELECT bool_and(pg_temp.same(pg_temp.words(s), 2000)) AS same_small_batches
FROM generate_series(1, 10) AS s;
RESET hybrid_search.sparse_batch_size;

-- writes: found at once with the statistics updated, then merged by VACUUM
INSERT INTO docs SELECT i, i % 10, pg_temp.doc(i) FROM generate_series(3001, 3500) AS i;
UPDATE docs SET fts = pg_temp.doc(id + 7) WHERE id % 7 = 0;
DELETE FROM docs WHERE id % 11 = 0;
SELECT (sparse_inverted_check('docs_idx') ->> 'consistent')::bool AS consistent_before_vacuum;
-- dead rows still count until VACUUM
SELECT (sparse_inverted_check('docs_idx') ->> 'documents')::bigint
    > (SELECT count(*) FROM docs WHERE fts IS NOT NULL) AS dead_rows_counted;
SELECT bool_and(pg_temp.same(pg_temp.words(s), k)) AS same_before_vacuum
FROM generate_series(1, 20) AS s, unnest(ARRAY[10, 1000, 4000]) AS k;
VACUUM docs;
SELECT
    (sparse_inverted_check('docs_idx') ->> 'consistent')::bool AS consistent_after_vacuum,
    (sparse_inverted_check('docs_idx') ->> 'pending_rows')::int AS pending_after_vacuum,
    pg_temp.stats_ok() AS stats_after_vacuum,
    pg_temp.bm25_ok('w1 w7 w7 w150') AS bm25_exact_after_vacuum;
SELECT bool_and(pg_temp.same(pg_temp.words(s), k)) AS same_after_vacuum
FROM generate_series(1, 20) AS s, unnest(ARRAY[10, 1000, 4000]) AS k;

-- positive only: the matching rows, nothing else
SET hybrid_search.sparse_positive_only = on;
SET enable_seqscan = off;
SELECT count(*) = (SELECT count(*) FROM docs WHERE fts <&> pg_temp.q('w5 w6') < 0) AS positive_only
FROM (SELECT id FROM docs ORDER BY fts <&> pg_temp.q('w5 w6') LIMIT 10000) AS s;
RESET enable_seqscan;
RESET hybrid_search.sparse_positive_only;

-- a row of 6,000 lexemes (several pending chunks), pending and merged
CREATE TABLE bm25_wide (id int, fts tsvector);
CREATE INDEX bm25_wide_idx ON bm25_wide USING sparse_inverted (fts);
INSERT INTO bm25_wide SELECT 1, to_tsvector('simple', string_agg('x' || i, ' ')) FROM generate_series(1, 6000) AS i;
INSERT INTO bm25_wide VALUES (2, to_tsvector('simple', 'x5 x5 x5'));
SET enable_seqscan = off;
SELECT id, round((fts <&> _bm25query('bm25_wide_idx', 'x5 x5999', 1.2, 0.75))::numeric, 9) AS d
FROM bm25_wide ORDER BY fts <&> _bm25query('bm25_wide_idx', 'x5 x5999', 1.2, 0.75);
VACUUM bm25_wide;
SELECT id, round((fts <&> _bm25query('bm25_wide_idx', 'x5 x5999', 1.2, 0.75))::numeric, 9) AS d
FROM bm25_wide ORDER BY fts <&> _bm25query('bm25_wide_idx', 'x5 x5999', 1.2, 0.75);
RESET enable_seqscan;
SELECT (sparse_inverted_check('bm25_wide_idx') ->> 'consistent')::bool AS wide_consistent,
    (sparse_inverted_check('bm25_wide_idx') ->> 'total_length')::int AS wide_length;

-- the check finds damage: lexemes changed behind the index's back
CREATE TABLE bm25_damaged (id int, fts tsvector);
INSERT INTO bm25_damaged VALUES (1, 'a:1 b:2'), (2, 'c:1');
CREATE INDEX bm25_damaged_idx ON bm25_damaged USING sparse_inverted (fts);
CREATE TABLE bm25_swap (id int, fts tsvector);
INSERT INTO bm25_swap VALUES (1, 'a:1,3 b:2'), (2, 'c:1');
SELECT (sparse_inverted_check('bm25_damaged_idx') ->> 'consistent')::bool AS damaged_consistent_before;
UPDATE pg_index SET indrelid = 'bm25_swap'::regclass WHERE indexrelid = 'bm25_damaged_idx'::regclass;
SELECT (sparse_inverted_check('bm25_damaged_idx') ->> 'consistent')::bool AS damaged_consistent_after,
    sparse_inverted_check('bm25_damaged_idx') -> 'problems' AS problems;
UPDATE pg_index SET indrelid = 'bm25_damaged'::regclass WHERE indexrelid = 'bm25_damaged_idx'::regclass;

-- hostile inputs: clear errors, never a crash
SELECT '{}'::bm25query;
SELECT _bm25query('docs', 'w1', 1.2, 0.75);
SELECT _bm25query('docs_pkey', 'w1', 1.2, 0.75);
CREATE TABLE vecs (v sparsevec);
CREATE INDEX vecs_idx ON vecs USING sparse_inverted (v);
SELECT _bm25query('vecs_idx', 'w1', 1.2, 0.75);
SELECT _bm25query('docs_idx', 'w1', -1, 0.75);
SELECT _bm25query('docs_idx', 'w1', 'NaN', 0.75);
SELECT _bm25query('docs_idx', 'w1', 1.2, 2);
SELECT _bm25query(NULL, 'w1', 1.2, 0.75) IS NULL AS null_index;
SELECT _bm25query('docs_idx', NULL, 1.2, 0.75) IS NULL AS null_query;
-- an empty query scores every row 0
SELECT pg_temp.q(''), count(*) FILTER (WHERE fts <&> pg_temp.q('') <> 0) AS nonzero FROM docs;
-- a huge query: 20,000 lexemes
SELECT pg_temp.same((SELECT string_agg('w' || i, ' ') FROM generate_series(1, 20000) AS i), 50) AS huge_same;
-- the operator with a NULL side
SELECT 'a:1'::tsvector <&> NULL::bm25query IS NULL AS null_distance;
-- reading another table's statistics needs SELECT on it
CREATE ROLE regress_bm25_reader;
GRANT USAGE ON SCHEMA public TO regress_bm25_reader;
GRANT EXECUTE ON FUNCTION _bm25query(regclass, tsvector, float8, float8) TO regress_bm25_reader;
SET ROLE regress_bm25_reader;
SELECT _bm25query('docs_idx', 'w1', 1.2, 0.75);
RESET ROLE;
GRANT SELECT ON docs TO regress_bm25_reader;
SET ROLE regress_bm25_reader;
SELECT _bm25query('docs_idx', 'w1', 1.2, 0.75) IS NOT NULL AS readable;
RESET ROLE;
REVOKE ALL ON docs FROM regress_bm25_reader;
REVOKE ALL ON FUNCTION _bm25query(regclass, tsvector, float8, float8) FROM regress_bm25_reader;
REVOKE ALL ON SCHEMA public FROM regress_bm25_reader;
DROP ROLE regress_bm25_reader;

-- unlogged tables, TRUNCATE, REINDEX
CREATE UNLOGGED TABLE bm25_ul (id int, fts tsvector);
CREATE INDEX bm25_ul_idx ON bm25_ul USING sparse_inverted (fts);
INSERT INTO bm25_ul VALUES (1, 'a:1');
SET enable_seqscan = off;
SELECT id FROM bm25_ul ORDER BY fts <&> _bm25query('bm25_ul_idx', 'a', 1.2, 0.75);
TRUNCATE bm25_ul;
SELECT id FROM bm25_ul ORDER BY fts <&> _bm25query('bm25_ul_idx', 'a', 1.2, 0.75);
RESET enable_seqscan;
REINDEX INDEX docs_idx;
SELECT (sparse_inverted_check('docs_idx') ->> 'consistent')::bool AS consistent_after_reindex,
    pg_temp.stats_ok() AS stats_after_reindex;

-- the statistics of the rows aggregated, for a role under row-level security:
-- rows, total length, then the df of each query lexeme in the query's order
SELECT _bm25_visible_statistics(fts, 'b c zz'::tsvector)
FROM (VALUES ('a:1 b:2,3'::tsvector), ('b:1 c:4'), (NULL), ('zz')) AS r (fts);
SELECT _bm25_visible_statistics(fts, 'b'::tsvector) IS NULL AS no_rows
FROM (VALUES ('a:1'::tsvector)) AS r (fts) WHERE false;
SELECT _bm25_visible_statistics(fts, NULL) FROM (VALUES ('a:1'::tsvector)) AS r (fts);
SELECT _bm25_visible_statistics(fts, q)
FROM (VALUES ('a:1'::tsvector, 'a'::tsvector), ('a:1', 'a b')) AS r (fts, q);
SELECT _bm25_visible_statistics_add(NULL, 'a:1', 'a');

-- a role under row-level security reads the statistics of a partial index
-- whose predicate is exactly its policies (both implications proven), and
-- of no other index
CREATE ROLE bm25_tenant3;
GRANT SELECT ON docs TO bm25_tenant3;
GRANT EXECUTE ON FUNCTION _bm25query, _bm25_policy_index, bm25query_out TO bm25_tenant3;
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant3 ON docs TO bm25_tenant3 USING (tenant = 3);
CREATE INDEX docs_tenant34_idx ON docs USING sparse_inverted (fts) WHERE tenant IN (3, 4);
CREATE INDEX docs_tenant3_idx ON docs USING sparse_inverted (fts) WHERE tenant = 3;
SELECT _bm25_policy_index('docs_idx') IS NULL AS not_for_the_owner;
SELECT _bm25_policy_index(NULL) IS NULL AS null_for_null;
SELECT _bm25_policy_index('docs');
SELECT _bm25_policy_index('docs_pkey');
SET ROLE bm25_tenant3;
SELECT _bm25_policy_index('docs_idx');
SELECT (_bm25query('docs_tenant3_idx', 'w1', 1.2, 0.75)::text::jsonb ->> 'documents')::int
    = (SELECT count(*) FROM docs WHERE fts IS NOT NULL) AS its_rows_counted;
SELECT _bm25query('docs_tenant34_idx', 'w1', 1.2, 0.75);
SELECT _bm25query('docs_idx', 'w1', 1.2, 0.75);
RESET ROLE;
DROP INDEX docs_tenant34_idx, docs_tenant3_idx;
DROP POLICY tenant3 ON docs;
ALTER TABLE docs DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON docs FROM bm25_tenant3;
REVOKE ALL ON FUNCTION _bm25query, _bm25_policy_index, bm25query_out FROM bm25_tenant3;
DROP ROLE bm25_tenant3;

-- without such a copy, a btree on the policy's expression names the role's
-- rows, and their statistics are counted in the BM25 index; NULL (the caller
-- then counts the visible rows) for the owner, without the btree, or for a
-- policy that is not one condition on it
CREATE ROLE bm25_tenant3;
GRANT SELECT ON docs TO bm25_tenant3;
GRANT EXECUTE ON FUNCTION _bm25query_policy_rows, bm25query_out TO bm25_tenant3;
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant3 ON docs TO bm25_tenant3 USING (tenant = 3);
SELECT _bm25query_policy_rows('docs_idx', 'w1', 1.2, 0.75) IS NULL AS not_for_the_owner;
SELECT _bm25query_policy_rows(NULL, 'w1', 1.2, 0.75) IS NULL AS null_for_null;
SELECT _bm25query_policy_rows('docs', 'w1', 1.2, 0.75);
SELECT _bm25query_policy_rows('docs_pkey', 'w1', 1.2, 0.75);
SET ROLE bm25_tenant3;
SELECT _bm25query_policy_rows('docs_idx', 'w1', 1.2, 0.75) IS NULL AS no_btree;
RESET ROLE;
CREATE INDEX docs_tenant_idx ON docs (tenant);
SET ROLE bm25_tenant3;
SELECT (_bm25query_policy_rows('docs_idx', 'w1', 1.2, 0.75)::text::jsonb ->> 'documents')::int
    = (SELECT count(*) FROM docs WHERE fts IS NOT NULL) AS its_rows_counted;
SELECT _bm25query_policy_rows('docs_idx', 'w1', -1, 0.75);
SELECT _bm25query_policy_rows('docs_idx', 'w1', 'NaN', 0.75);
SELECT _bm25query_policy_rows('docs_idx', 'w1', 1.2, 2);
-- an empty query: the role's rows counted, no lexeme
SELECT (_bm25query_policy_rows('docs_idx', '', 1.2, 0.75)::text::jsonb ->> 'documents')::int
    = (SELECT count(*) FROM docs WHERE fts IS NOT NULL) AS empty_query_counts_its_rows;
RESET ROLE;
ALTER POLICY tenant3 ON docs USING (tenant = 3 OR tenant = 4);
SET ROLE bm25_tenant3;
SELECT _bm25query_policy_rows('docs_idx', 'w1', 1.2, 0.75) IS NULL AS not_one_condition;
RESET ROLE;
DROP INDEX docs_tenant_idx;
DROP POLICY tenant3 ON docs;
ALTER TABLE docs DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON docs FROM bm25_tenant3;
REVOKE ALL ON FUNCTION _bm25query_policy_rows, bm25query_out FROM bm25_tenant3;
DROP ROLE bm25_tenant3;
