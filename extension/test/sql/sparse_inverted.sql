-- sparse_inverted: exact ORDER BY <#> through the index, writes, VACUUM,
-- the check function and hostile inputs. Every comparison is against the
-- same query without the index (a sequential scan), as a boolean.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hybrid_search CASCADE;
RESET client_min_messages;
SET search_path = public;

-- deterministic pseudo-random sparse vectors: 1..20 terms out of 300, some
-- repeated weights (ties), a few empty vectors and NULLs
CREATE FUNCTION pg_temp.vec(seed int) RETURNS sparsevec LANGUAGE sql AS $$
    SELECT CASE
        WHEN seed % 97 = 0 THEN NULL
        WHEN seed % 89 = 0 THEN '{}/300'::sparsevec
        ELSE ('{' || (
            SELECT string_agg(t || ':' || ((seed * 7 + t * 3) % 5 + 1) * 0.25, ',' ORDER BY t)
            FROM (SELECT DISTINCT ((seed * 31 + j * j * 17 + j * seed) % 300) + 1 AS t
                  FROM generate_series(1, 1 + seed % 20) AS j) AS terms
        ) || '}/300')::sparsevec
    END
$$;

CREATE TABLE items (id int PRIMARY KEY, tenant int, v sparsevec);
INSERT INTO items SELECT i, i % 10, pg_temp.vec(i) FROM generate_series(1, 3000) AS i;
CREATE INDEX items_v_idx ON items USING sparse_inverted (v);
SELECT (sparse_inverted_check('items_v_idx') ->> 'consistent')::bool AS consistent;

-- the plan
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <#> '{1:1,2:0.5}/300' LIMIT 5;
RESET enable_seqscan;

-- top-k distances through the index equal the sequential scan's, for many
-- queries and k up to every row (zero, negative and null distances included)
CREATE FUNCTION pg_temp.same(q sparsevec, k int, flt int DEFAULT NULL) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
    a float8[];
    b float8[];
    n int;
    line text;
    plan text := '';
BEGIN
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_bitmapscan = off;
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) SELECT v <#> $1 FROM items'
        ' WHERE $2::int IS NULL OR tenant = $2 ORDER BY v <#> $1 LIMIT $3' USING q, flt, k LOOP
        plan := plan || line;
    END LOOP;
    IF position('items_v_idx' in plan) = 0 THEN
        RAISE EXCEPTION 'not an index scan: %', plan;
    END IF;
    SELECT array_agg(d), count(*) INTO a, n FROM (
        SELECT v <#> q AS d FROM items WHERE flt IS NULL OR tenant = flt
        ORDER BY v <#> q LIMIT k) AS s;
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_indexscan = off;
    SELECT array_agg(d) INTO b FROM (
        SELECT v <#> q AS d FROM items WHERE flt IS NULL OR tenant = flt
        ORDER BY v <#> q LIMIT k) AS s;
    RETURN a IS NOT DISTINCT FROM b;
END
$$;

SELECT bool_and(pg_temp.same(pg_temp.vec(s), k)) AS all_same
FROM generate_series(1, 60) AS s, unnest(ARRAY[1, 10, 100, 1000, 3000, 5000]) AS k
WHERE s % 97 <> 0;

-- with a filter (10%): k rows whenever k rows match
SELECT bool_and(pg_temp.same(pg_temp.vec(s), k, s % 10)) AS filtered_same
FROM generate_series(1, 30) AS s, unnest(ARRAY[10, 100, 300, 400]) AS k
WHERE s % 97 <> 0;

-- the plan really is the index's
SET enable_seqscan = off;
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <#> '{5:1}/300' LIMIT 3000) AS s;
RESET enable_seqscan;

-- negative query weights, an empty query, a NULL query
SELECT pg_temp.same('{1:-1,7:2,150:-0.5}/300', 3000) AS negative_same;
SELECT pg_temp.same('{}/300', 100) AS empty_same;
SET enable_seqscan = off;
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <#> NULL LIMIT 10) AS s;
RESET enable_seqscan;

-- writes: found at once (pending list), then merged by VACUUM
INSERT INTO items SELECT i, i % 10, pg_temp.vec(i) FROM generate_series(3001, 3500) AS i;
UPDATE items SET v = pg_temp.vec(id + 7) WHERE id % 7 = 0;
DELETE FROM items WHERE id % 11 = 0;
SELECT (sparse_inverted_check('items_v_idx') ->> 'consistent')::bool AS consistent_before_vacuum;
SELECT bool_and(pg_temp.same(pg_temp.vec(s), k)) AS same_before_vacuum
FROM generate_series(1, 30) AS s, unnest(ARRAY[10, 1000, 4000]) AS k
WHERE s % 97 <> 0;
VACUUM items;
SELECT
    (sparse_inverted_check('items_v_idx') ->> 'consistent')::bool AS consistent_after_vacuum,
    (sparse_inverted_check('items_v_idx') ->> 'pending_rows')::int AS pending_after_vacuum,
    (sparse_inverted_check('items_v_idx') ->> 'rows_not_visible')::int AS dead_after_vacuum;
SELECT bool_and(pg_temp.same(pg_temp.vec(s), k)) AS same_after_vacuum
FROM generate_series(1, 30) AS s, unnest(ARRAY[10, 1000, 4000]) AS k
WHERE s % 97 <> 0;

-- an insert past the pending limit merges
-- (the limit is at least 1/16 of the merged rows, here about 200)
SET hybrid_search.sparse_pending_limit = 16;
INSERT INTO items SELECT i, i % 10, pg_temp.vec(i) FROM generate_series(3501, 3800) AS i;
RESET hybrid_search.sparse_pending_limit;
SELECT (sparse_inverted_check('items_v_idx') ->> 'pending_rows')::int < 300 AS merged_on_insert;
SELECT pg_temp.same(pg_temp.vec(3550), 50) AS same_after_insert_merge;

-- small batches: the scan goes on batch after batch in exact order
SET hybrid_search.sparse_batch_size = 1;
SELECT bool_and(pg_temp.same(pg_temp.vec(s), 2000)) AS same_small_batches
FROM generate_series(1, 10) AS s;
RESET hybrid_search.sparse_batch_size;

-- positive only: the rows sharing a term, nothing else
SET hybrid_search.sparse_positive_only = on;
SET enable_seqscan = off;
SELECT count(*) = (SELECT count(*) FROM items WHERE v <#> '{5:1,6:1}/300' < 0) AS positive_only
FROM (SELECT id FROM items ORDER BY v <#> '{5:1,6:1}/300' LIMIT 10000) AS s;
RESET enable_seqscan;
RESET hybrid_search.sparse_positive_only;

-- the check finds damage: weights changed behind the index's back
CREATE TABLE damaged (id int, v sparsevec);
INSERT INTO damaged VALUES (1, '{1:1,2:2}/10'), (2, '{3:1}/10');
CREATE INDEX damaged_idx ON damaged USING sparse_inverted (v);
CREATE TABLE swap (id int, v sparsevec);
INSERT INTO swap VALUES (1, '{1:1,2:3}/10'), (2, '{3:1}/10');
CREATE INDEX swap_idx ON swap USING sparse_inverted (v);
-- a table whose index was built for other values: move the files' roles by
-- rebuilding the index on a copy, then comparing across (same TIDs)
SELECT (sparse_inverted_check('damaged_idx') ->> 'consistent')::bool AS damaged_consistent_before;
UPDATE pg_index SET indrelid = 'swap'::regclass WHERE indexrelid = 'damaged_idx'::regclass;
SELECT (sparse_inverted_check('damaged_idx') ->> 'consistent')::bool AS damaged_consistent_after,
    sparse_inverted_check('damaged_idx') -> 'problems' AS problems;
UPDATE pg_index SET indrelid = 'damaged'::regclass WHERE indexrelid = 'damaged_idx'::regclass;

-- hostile inputs: clear errors, never a crash
SELECT id FROM items ORDER BY v <#> '{1:NaN}/300' LIMIT 1;
SELECT id FROM items ORDER BY v <#> '{1:1}/1000000001' LIMIT 1;
SET enable_seqscan = off;
SELECT id FROM items ORDER BY v <#> '{1:1}/1000000000' LIMIT 1;
RESET enable_seqscan;
SELECT sparse_inverted_check('items'::regclass);
SELECT sparse_inverted_check('items_pkey'::regclass);
SELECT sparse_inverted_check(NULL);
CREATE INDEX ON items USING sparse_inverted (v) WITH (lists = 3);
CREATE INDEX ON items USING sparse_inverted (id);
CREATE INDEX ON items USING sparse_inverted (v, v);

-- huge weights: the float sum overflows, the order stays exact
CREATE TABLE big (id int, v sparsevec);
INSERT INTO big VALUES (1, '{1:3e38,2:3e38}/5'), (2, '{1:1e38}/5'), (3, '{2:-3e38}/5'), (4, '{3:1}/5');
CREATE INDEX ON big USING sparse_inverted (v);
SET enable_seqscan = off;
SELECT id, v <#> '{1:10,2:10,3:1}/5' AS d FROM big ORDER BY v <#> '{1:10,2:10,3:1}/5';
RESET enable_seqscan;

-- a row too large for a page (16,000 terms) in the pending list and merged
CREATE TABLE wide (id int, v sparsevec);
CREATE INDEX wide_idx ON wide USING sparse_inverted (v);
INSERT INTO wide SELECT 1, ('{' || string_agg(i || ':1', ',') || '}/20000')::sparsevec FROM generate_series(1, 16000) AS i;
INSERT INTO wide VALUES (2, '{5:2}/20000');
SET enable_seqscan = off;
SELECT id, v <#> '{5:1,15999:1}/20000' AS d FROM wide ORDER BY v <#> '{5:1,15999:1}/20000';
VACUUM wide;
SELECT id, v <#> '{5:1,15999:1}/20000' AS d FROM wide ORDER BY v <#> '{5:1,15999:1}/20000';
RESET enable_seqscan;
SELECT (sparse_inverted_check('wide_idx') ->> 'consistent')::bool AS wide_consistent;

-- a token in every row: its list has a skip array, and a first batch of 5 leaves it out
-- and looks it up at the rows that can enter (DEBUG1 says so); the same rows without, and
-- under 'auto', which leaves lists out only in sparsevec indexes of 2^19 row positions and more
CREATE TABLE skipped (id int, v sparsevec);
INSERT INTO skipped SELECT i, format('{1:%s,%s:%s}/3000', 1 + i % 7, 2 + i % 2000, i / 1000.0)::sparsevec
FROM generate_series(1, 20000) AS i;
CREATE INDEX skipped_idx ON skipped USING sparse_inverted (v);
SET enable_seqscan = off;
SET hybrid_search.sparse_batch_size = 5;
SET jit = off;
SET client_min_messages = debug1;
SET hybrid_search.sparse_skip_lists = on;
SELECT id, v <#> '{1:0.1,5:3}/3000' AS d FROM skipped ORDER BY v <#> '{1:0.1,5:3}/3000' LIMIT 5;
SET hybrid_search.sparse_skip_lists = auto;
SELECT id, v <#> '{1:0.1,5:3}/3000' AS d FROM skipped ORDER BY v <#> '{1:0.1,5:3}/3000' LIMIT 5;
RESET client_min_messages;
SET hybrid_search.sparse_skip_lists = off;
SELECT id, v <#> '{1:0.1,5:3}/3000' AS d FROM skipped ORDER BY v <#> '{1:0.1,5:3}/3000' LIMIT 5;
RESET hybrid_search.sparse_skip_lists;
RESET hybrid_search.sparse_batch_size;
RESET jit;
RESET enable_seqscan;
SELECT (sparse_inverted_check('skipped_idx') ->> 'consistent')::bool AS skipped_consistent;

-- unlogged tables, empty tables, TRUNCATE, REINDEX
CREATE UNLOGGED TABLE ul (id int, v sparsevec);
CREATE INDEX ul_idx ON ul USING sparse_inverted (v);
INSERT INTO ul VALUES (1, '{1:1}/3');
SET enable_seqscan = off;
SELECT id FROM ul ORDER BY v <#> '{1:1}/3';
TRUNCATE ul;
SELECT id FROM ul ORDER BY v <#> '{1:1}/3';
RESET enable_seqscan;
REINDEX INDEX items_v_idx;
SELECT (sparse_inverted_check('items_v_idx') ->> 'consistent')::bool AS consistent_after_reindex;
SELECT pg_temp.same(pg_temp.vec(3), 100) AS same_after_reindex;

-- filter columns: a condition on a later column ranks only the rows another
-- index of the table finds (the btree on tenant), from the fourth batch on
CREATE TABLE tenanted (id int, tenant int, v sparsevec);
INSERT INTO tenanted SELECT i, i % 10, format('{1:%s,2:%s}/3', i % 97 + 1, i % 13 + 1)::sparsevec
FROM generate_series(1, 2000) AS i;
CREATE INDEX tenanted_v_idx ON tenanted USING sparse_inverted (v, tenant int4_filter_ops);
CREATE INDEX tenanted_tenant_idx ON tenanted (tenant);
ANALYZE tenanted;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SET enable_sort = off;
SET hybrid_search.sparse_batch_size = 5;
EXPLAIN (COSTS OFF) SELECT id FROM tenanted WHERE tenant = 3 ORDER BY v <#> '{1:1,2:1}/3' LIMIT 5;
SELECT id, v <#> '{1:1,2:1}/3' AS d FROM tenanted WHERE tenant = 3 ORDER BY v <#> '{1:1,2:1}/3' LIMIT 5;
SELECT count(*) FROM (SELECT id FROM tenanted WHERE tenant = 3 ORDER BY v <#> '{1:1,2:1}/3' LIMIT 1000) AS t;
SELECT count(*) FROM (SELECT id FROM tenanted WHERE tenant = 11 ORDER BY v <#> '{1:1,2:1}/3' LIMIT 5) AS t;
RESET hybrid_search.sparse_batch_size;
RESET enable_sort;
RESET enable_bitmapscan;
RESET enable_seqscan;
DROP TABLE tenanted;
