-- The SQL surface: every public function's result shape (\gdesc: column names
-- and types) and its refusals of bad arguments, with the tiny test model
-- (HYBRID_SEARCH_VENV, HYBRID_SEARCH_TEST_MODEL: extension/Makefile). Errors
-- are shown terse: the message a caller sees, not where it was raised.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hybrid_search CASCADE;
RESET client_min_messages;
SET search_path = public;
\set VERBOSITY terse
\getenv venv HYBRID_SEARCH_VENV
\getenv model HYBRID_SEARCH_TEST_MODEL
SELECT count(*) AS settings FROM hybrid_search_configure(python_venv => :'venv');
SELECT count(*) AS rows FROM hybrid_search_set_model(:'model');
INSERT INTO documents (content, metadata) VALUES
    ('vacuum reclaims storage occupied by dead tuples', '{"topic": "maintenance"}'),
    ('an index scan reads the index then the heap', '{"topic": "planner"}'),
    ('autovacuum launches workers that vacuum tables', '{"topic": "maintenance"}');

-- configuration
SELECT * FROM hybrid_search_settings \gdesc
SELECT * FROM hybrid_search_configure() \gdesc
SELECT hybrid_search_configure(batch_size => 0);
SELECT hybrid_search_configure(embed_mode => 'sometimes');
SELECT hybrid_search_configure(bm25_k1 => -1);
SELECT hybrid_search_configure(bm25_b => 2);
SELECT hybrid_search_configure(bm25_statistics => 'all');
SELECT * FROM hybrid_search_model_info() \gdesc
SELECT * FROM hybrid_search_model_stats() \gdesc
SELECT hybrid_search_set_model('/nonexistent/model');

-- embeddings
SELECT embed_dense('vacuum') \gdesc
SELECT embed_sparse('vacuum') \gdesc
SELECT * FROM embed('vacuum') \gdesc
SELECT * FROM embed_batch(ARRAY['vacuum', 'index']) \gdesc
SELECT embed_dense(NULL) IS NULL AS strict_null;
SELECT count(*) AS rows FROM embed_batch(ARRAY[]::text[]);
SELECT * FROM query_tokens('vacuum') \gdesc
SELECT * FROM sparse_explain('vacuum') \gdesc

-- sparse vectors
SELECT * FROM sparse_entries('{1:0.5,7:2}/10'::sparsevec);
SELECT sparse_to_jsonb('{1:0.5,7:2}/10'::sparsevec);
SELECT sparse_dot('{1:0.5,7:2}/10'::sparsevec, '{7:3}/10'::sparsevec);
SELECT sparse_dot('{"1": 0.5, "7": 2}'::jsonb, '{"7": 3}'::jsonb);
SELECT sparse_dot('{1:1}/10'::sparsevec, '{1:1}/11'::sparsevec);
SELECT sparse_dot('[1, 2]'::jsonb, '{}'::jsonb);

-- the three legs and their fusion
SELECT * FROM dense_search('vacuum', 2) \gdesc
SELECT * FROM dense_search(embed_dense('vacuum'), 2) \gdesc
SELECT * FROM sparse_search('vacuum', 2) \gdesc
SELECT * FROM sparse_search(embed_sparse('vacuum'), 2) \gdesc
SELECT * FROM sparse_search_scan(embed_sparse('vacuum'), 2) \gdesc
SELECT * FROM keyword_search('vacuum', 2) \gdesc
SELECT * FROM keyword_search_scan('vacuum', 2) \gdesc
SELECT * FROM hybrid_search('vacuum', 2) \gdesc
SELECT count(*) AS results FROM hybrid_search('vacuum', 2);
SELECT id FROM dense_search('vacuum', 0);
SELECT id FROM dense_search('vacuum', -1);
SELECT id FROM dense_search('', 2);
SELECT id FROM dense_search(NULL::text, 2);
SELECT id FROM dense_search('vacuum', 2, filter => '[1]');
SELECT id FROM sparse_search('vacuum', 100001);
SELECT d.content FROM keyword_search('vacuum', 5, match => 'autovacuum') AS s JOIN documents AS d USING (id);
SELECT d.content FROM keyword_search('vacuum', 2) AS s JOIN documents AS d USING (id) ORDER BY s.rank;
SELECT id FROM keyword_search('vacuum', 5, '{"topic": "planner"}');
SELECT id FROM hybrid_search('vacuum', 2, dense_weight => -1);
SELECT id FROM hybrid_search('vacuum', 2, fusion => 'average');
SELECT id FROM hybrid_search('vacuum', 2, dense_weight => 0, sparse_weight => 0, keyword_weight => 0);
SELECT to_bm25query('documents_fts_bm25_idx', 'vacuum') IS NOT NULL AS query;
SELECT to_bm25query('documents', 'vacuum');
SELECT * FROM colbert_rerank('vacuum', ARRAY[1]::bigint[]) \gdesc
SELECT count(*) AS reranked FROM colbert_rerank('vacuum', (SELECT array_agg(id) FROM documents));
SELECT hybrid_search_create_dense_index('hnsw') \gdesc
SELECT hybrid_search_create_dense_index('btree');

-- writes, the queue and sources
SELECT hybrid_search_embed_documents(ARRAY[1]::bigint[]) \gdesc
SELECT hybrid_search_reembed() \gdesc
SELECT hybrid_search_enqueue(ARRAY[1]::bigint[]) \gdesc
SELECT hybrid_search_backfill() \gdesc
SELECT hybrid_search_retry_errors() \gdesc
SELECT * FROM hybrid_search_process_queue() \gdesc
SELECT hybrid_search_process_queue(0);
SELECT * FROM hybrid_search_queue_status \gdesc
CREATE TABLE notes (note_id int PRIMARY KEY, body text, tag text);
SELECT hybrid_search_enable('notes', 'body', 'queued', ARRAY['tag']::name[]) \gdesc
SELECT hybrid_search_enable('notes', 'missing');
SELECT hybrid_search_enable('notes', 'body', 'sometimes');
SELECT hybrid_search_enable('notes', 'body', 'queued', ARRAY['missing']::name[]);
CREATE TABLE keyless (body text);
SELECT hybrid_search_enable('keyless', 'body');
INSERT INTO notes VALUES (1, 'checkpoints flush dirty buffers', 'io');
SELECT hybrid_search_enable('notes', 'body', 'sync');
SELECT hybrid_search_enable('notes', 'body', 'sync');
SELECT content, metadata FROM documents WHERE source IS NOT NULL;
SELECT hybrid_search_disable('notes') \gdesc
SELECT hybrid_search_disable('notes');
SELECT hybrid_search_disable('pg_class');

-- operations
SELECT * FROM hybrid_search_check() \gdesc
SELECT sparse_inverted_check('documents_sparse_idx') \gdesc
SELECT sparse_inverted_check('documents');
SELECT hybrid_search_refresh() \gdesc
SELECT * FROM hybrid_search_token_stats \gdesc
SELECT * FROM hybrid_search_query_cache_stats \gdesc
SELECT hybrid_search_query_cache_clear() \gdesc
SELECT * FROM hybrid_search_backend_memory() \gdesc
SELECT hybrid_search_restore() \gdesc
CREATE ROLE hybrid_search_api_reader;
SELECT hybrid_search_grant('hybrid_search_api_reader', 'search') \gdesc
SELECT hybrid_search_grant('hybrid_search_api_reader', 'everything');
SELECT bool_or(g LIKE 'grant execute on function %.hybrid_search(%) to hybrid_search_api_reader')
    AS grants_hybrid_search
FROM hybrid_search_grant('hybrid_search_api_reader', 'search') AS g;
SELECT hybrid_search_revoke('hybrid_search_api_reader') \gdesc
SELECT count(*) > 0 AS statements, bool_and(r LIKE 'revoke % from hybrid_search_api_reader') AS revokes
FROM hybrid_search_revoke('hybrid_search_api_reader') AS r;
-- the schema's USAGE stays (other roles' grants may need it)
DROP OWNED BY hybrid_search_api_reader;
DROP ROLE hybrid_search_api_reader;

-- evaluation
CREATE TABLE queries (id int, query text);
CREATE TABLE qrels (query_id int, doc_id bigint, relevance int);
INSERT INTO queries VALUES (1, 'vacuum');
INSERT INTO qrels SELECT 1, id, 1 FROM documents WHERE content LIKE 'vacuum%';
SELECT * FROM hybrid_search_evaluate('queries', 'qrels', 2) \gdesc
SELECT * FROM hybrid_search_evaluate('queries', 'qrels', 0);
SELECT method, judged FROM hybrid_search_evaluate('queries', 'qrels', 2) ORDER BY method;
SELECT * FROM hybrid_search_evaluate('qrels', 'qrels', 2);
SELECT * FROM hybrid_search_evaluate('queries', 'queries', 2);
SELECT * FROM hybrid_search_score_run(ARRAY[]::hybrid_search_run_row[], 'queries');

DROP TABLE notes, keyless, queries, qrels;
DELETE FROM documents;
