-- dense_flat: exact filtered ORDER BY <=> through the index, writes, VACUUM,
-- the check function and hostile inputs. Every comparison is against the
-- same query without the index (a sequential scan), as a boolean.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hybrid_search CASCADE;
RESET client_min_messages;
SET search_path = public;

-- deterministic vectors of 16 dimensions: a few duplicates, a zero vector
-- (cosine distance NaN) and NULLs
CREATE FUNCTION pg_temp.vec(seed int) RETURNS vector LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN seed % 97 = 0 THEN NULL
        WHEN seed = 500 THEN array_fill(0, ARRAY[16])::vector
        ELSE (SELECT array_agg(sin(((seed % 700) * 13 + j * 7) * 0.37)::real ORDER BY j)
              FROM generate_series(1, 16) AS j)::vector
    END
$$;

CREATE TABLE dense_items (id int PRIMARY KEY, tenant int, v vector(16));
INSERT INTO dense_items SELECT i, i % 10, pg_temp.vec(i) FROM generate_series(1, 2000) AS i;
CREATE INDEX dense_items_tenant_idx ON dense_items (tenant);
CREATE INDEX dense_items_v_idx ON dense_items USING dense_flat (v, tenant int4_filter_ops);
ANALYZE dense_items;
SELECT (dense_flat_check('dense_items_v_idx') ->> 'consistent')::bool AS consistent;

-- the plan: a filter makes it the index (here, at 200 rows a tenant, once
-- the btree and a sort are off the table); without one it is never chosen
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT id FROM dense_items WHERE tenant = 3 ORDER BY v <=> pg_temp.vec(1) LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM dense_items ORDER BY v <=> pg_temp.vec(1) LIMIT 5;

-- the distances through the index equal the sequential scan's, for every k
-- up to every row of the tenant (NaN, then NULL, last)
CREATE FUNCTION pg_temp.same(q vector, k int, t int) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
    a text[];
    b text[];
BEGIN
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_bitmapscan = off;
    SET LOCAL enable_sort = off;
    SELECT array_agg(d::text ORDER BY n) INTO a FROM (
        SELECT v <=> q AS d, row_number() OVER () AS n FROM (
            SELECT v FROM dense_items WHERE tenant = t ORDER BY v <=> q LIMIT k) AS s) AS r;
    SET LOCAL enable_indexscan = off;
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_sort = on;
    SELECT array_agg(d::text ORDER BY n) INTO b FROM (
        SELECT v <=> q AS d, row_number() OVER () AS n FROM (
            SELECT v FROM dense_items WHERE tenant = t ORDER BY v <=> q LIMIT k) AS s) AS r;
    RETURN a IS NOT DISTINCT FROM b;
END
$$;
SELECT bool_and(pg_temp.same(pg_temp.vec(q), k, q % 10)) AS exact
FROM generate_series(1, 40) AS q, unnest(ARRAY[1, 10, 57, 250]) AS k;

-- writes: inserts (a NULL among them), an update, a delete, then VACUUM
INSERT INTO dense_items SELECT i, i % 10, pg_temp.vec(i) FROM generate_series(2001, 2300) AS i;
UPDATE dense_items SET v = pg_temp.vec(id + 1) WHERE id % 13 = 0;
DELETE FROM dense_items WHERE id % 7 = 0;
SELECT bool_and(pg_temp.same(pg_temp.vec(q), 250, q % 10)) AS exact_after_writes FROM generate_series(1, 20) AS q;
VACUUM dense_items;
SELECT (dense_flat_check('dense_items_v_idx') ->> 'consistent')::bool AS consistent,
    (dense_flat_check('dense_items_v_idx') ->> 'dead_rows')::int > 0 AS marked_dead;
SELECT bool_and(pg_temp.same(pg_temp.vec(q), 250, q % 10)) AS exact_after_vacuum FROM generate_series(1, 20) AS q;

-- hostile inputs: a query of other dimensions, a row of other dimensions,
-- a NULL query (every row, NULL distances), a vector too large for a page
SELECT id FROM dense_items WHERE tenant = 3 ORDER BY v <=> '[1,2,3]' LIMIT 1;
CREATE TABLE dense_loose (v vector, tenant int);
CREATE INDEX ON dense_loose USING dense_flat (v, tenant int4_filter_ops);
INSERT INTO dense_loose VALUES ('[1,2,3]', 1);
INSERT INTO dense_loose VALUES ('[1,2]', 1);
INSERT INTO dense_loose SELECT array_fill(1, ARRAY[9000])::vector, 1;
SELECT count(*) AS rows_with_null_distance FROM (
    SELECT v <=> NULL AS d FROM dense_items WHERE tenant = 3 ORDER BY v <=> NULL LIMIT 10) AS s
WHERE d IS NULL;
SELECT dense_flat_check('dense_items');
CREATE INDEX ON dense_loose USING dense_flat (tenant int4_filter_ops, v);

-- a graph (graph_degree): an ORDER BY without a condition walks it. A walk
-- as wide as the table meets every node, so its order is a sequential
-- scan's; inserted rows are the graph's tail until VACUUM links them in
CREATE INDEX dense_items_graph_idx ON dense_items USING dense_flat (v) WITH (graph_degree = 8);
CREATE INDEX ON dense_loose USING dense_flat (v) WITH (graph_degree = 65);
SET hybrid_search.dense_ef_search = 5000;
CREATE FUNCTION pg_temp.same_unfiltered(q vector, k int) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE a text[]; b text[];
BEGIN
    SELECT array_agg(d::text ORDER BY n) INTO a FROM (
        SELECT v <=> q AS d, row_number() OVER () AS n FROM (
            SELECT v FROM dense_items ORDER BY v <=> q LIMIT k) AS s) AS r;
    SET LOCAL enable_indexscan = off;
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_sort = on;
    SELECT array_agg(d::text ORDER BY n) INTO b FROM (
        SELECT v <=> q AS d, row_number() OVER () AS n FROM (
            SELECT v FROM dense_items ORDER BY v <=> q LIMIT k) AS s) AS r;
    RETURN a IS NOT DISTINCT FROM b;
END
$$;
EXPLAIN (COSTS OFF) SELECT id FROM dense_items ORDER BY v <=> (SELECT v FROM dense_items WHERE id = 1) LIMIT 10;
SELECT bool_and(pg_temp.same_unfiltered(pg_temp.vec(q), k)) AS graph_exact
FROM generate_series(1, 20) AS q, unnest(ARRAY[1, 10, 100]) AS k;
INSERT INTO dense_items SELECT i, i % 10, pg_temp.vec(i) FROM generate_series(2301, 2600) AS i;
SELECT (dense_flat_check('dense_items_graph_idx') ->> 'graph_tail_rows')::int AS tail_before_vacuum;
SELECT bool_and(pg_temp.same_unfiltered(pg_temp.vec(q), 100)) AS graph_exact_with_a_tail
FROM generate_series(2290, 2310) AS q;
VACUUM dense_items;
SELECT (dense_flat_check('dense_items_graph_idx') ->> 'consistent')::bool AS consistent,
    (dense_flat_check('dense_items_graph_idx') ->> 'graph_tail_rows')::int AS tail_after_vacuum;
SELECT bool_and(pg_temp.same_unfiltered(pg_temp.vec(q), 100)) AS graph_exact_after_vacuum
FROM generate_series(2290, 2310) AS q;
RESET hybrid_search.dense_ef_search;
RESET enable_seqscan;
RESET enable_bitmapscan;
RESET enable_sort;
DROP TABLE dense_items, dense_loose;
