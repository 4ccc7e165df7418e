-------------------------------------------------------------------------------
-- hybrid_search_run_row
-- One retrieved document of one method for one query: what
-- hybrid_search_score_run scores.
-- (a type has no CREATE OR REPLACE; upgrades change it with ALTER TYPE)
do $block$
begin
    if pg_catalog.to_regtype('@extschema@.hybrid_search_run_row') is null then
        create type @extschema@.hybrid_search_run_row as (
            query_id text,
            method text,
            rank integer,
            doc_id bigint
        );
    end if;
end;
$block$;

comment on type @extschema@.hybrid_search_run_row is
'a ranked result of one method for one query (input of hybrid_search_score_run)';

-------------------------------------------------------------------------------
-- _check_table_columns
-- Refuses a table argument that lacks a column the caller reads, naming the
-- argument and every column it needs, before any query names the column
-- (which would fail with the query's own alias: "column q.id does not
-- exist").
create or replace function @extschema@._check_table_columns(
    caller text,
    argument text,
    tbl regclass,
    columns name[]
) returns void
as $func$
declare
    missing text;
begin
    select pg_catalog.string_agg(c.name, ', ' order by c.position) into missing
    from pg_catalog.unnest(columns) with ordinality as c (name, position)
    where not exists (
        select from pg_catalog.pg_attribute as a
        where a.attrelid = tbl and a.attname = c.name and a.attnum > 0 and not a.attisdropped
    );
    if missing is not null then
        raise exception '%: % table % has no column %; it needs columns %', caller, argument, tbl, missing,
            pg_catalog.array_to_string(columns, ', ')
        using errcode = 'undefined_column';
    end if;
end;
$func$
-- reads the catalogs only: hybrid_search_score_run, parallel restricted, calls it
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_score_run
-- Mean nDCG@k (linear gains, as trec_eval and BEIR), recall@k and MRR@k per
-- method over every judged query: a query with at least one qrels row of
-- relevance > 0 (and among query_ids, the queries asked, unless that is
-- NULL). A judged query a method returned nothing for scores 0.
-- qrels needs columns query_id, doc_id and relevance (any types that cast to
-- text, bigint and integer).
create or replace function @extschema@.hybrid_search_score_run(
    run @extschema@.hybrid_search_run_row[],
    qrels regclass,
    k integer default 10,
    query_ids text[] default null
) returns table (
    method text,
    judged integer,
    ndcg double precision,
    recall double precision,
    mrr double precision
)
as $func$
#variable_conflict use_column
begin
    perform @extschema@._check_search_arguments('hybrid_search_score_run', k, null);
    if qrels is null then
        raise exception 'hybrid_search_score_run: qrels must be a table'
        using errcode = 'invalid_parameter_value';
    end if;
    perform @extschema@._check_table_columns(
        'hybrid_search_score_run', 'qrels', qrels, array['query_id', 'doc_id', 'relevance']::name[]
    );
    return query execute pg_catalog.format(
        $sql$
        with judgements as (
            select j.query_id::text as query_id, j.doc_id::bigint as doc_id,
                j.relevance::integer as relevance
            from %s as j
            where j.relevance::integer > 0 and ($3 is null or j.query_id::text = any($3))
        ),

        judged as (
            select j.query_id, count(*) as relevant from judgements as j group by j.query_id
        ),

        ideal as (
            select i.query_id, sum(i.relevance / pg_catalog.log(2, i.position + 1)) as idcg
            from (
                select
                    j.query_id, j.relevance::numeric as relevance,
                    row_number() over (partition by j.query_id order by j.relevance desc) as position
                from judgements as j
            ) as i
            where i.position <= $2
            group by i.query_id
        ),

        results as (
            select distinct on (r.method, r.query_id, r.doc_id) r.*
            from pg_catalog.unnest($1) as r
            where r.rank between 1 and $2
            order by r.method, r.query_id, r.doc_id, r.rank
        ),

        per_query as (
            select
                m.method,
                coalesce(sum(g.relevance / pg_catalog.log(2, r.rank + 1)), 0) / i.idcg as ndcg,
                count(g.doc_id)::double precision / q.relevant as recall,
                coalesce(1.0 / min(r.rank) filter (where g.doc_id is not null), 0) as mrr
            from (select distinct r.method from pg_catalog.unnest($1) as r) as m
            cross join judged as q
            inner join ideal as i on q.query_id = i.query_id
            left join results as r on m.method = r.method and q.query_id = r.query_id
            left join judgements as g on r.query_id = g.query_id and r.doc_id = g.doc_id
            group by m.method, q.query_id, q.relevant, i.idcg
        )

        select
            p.method,
            count(*)::integer,
            avg(p.ndcg)::double precision,
            avg(p.recall)::double precision,
            avg(p.mrr)::double precision
        from per_query as p
        group by p.method
        order by p.method
        $sql$,
        qrels
    ) using run, k, query_ids;
end;
$func$
language plpgsql stable parallel restricted security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_score_run is
'mean nDCG@k, recall@k and MRR@k per method of a run against judgements (query_id, doc_id, relevance)';

-------------------------------------------------------------------------------
-- hybrid_search_evaluate
-- Runs every query of `queries` (columns id, query) through each leg alone
-- and each fusion of hybrid_search, and scores them against `qrels` with
-- hybrid_search_score_run. Each query is embedded once (embed_batch), so
-- every method sees the same query vectors. Weights and fusion options are
-- hybrid_search's (NULL = its defaults).
create or replace function @extschema@.hybrid_search_evaluate(
    queries regclass,
    qrels regclass,
    k integer default 10,
    candidates integer default 100,
    rrf_k integer default 60,
    dense_weight double precision default null,
    sparse_weight double precision default null,
    keyword_weight double precision default null
) returns table (
    method text,
    judged integer,
    ndcg double precision,
    recall double precision,
    mrr double precision
)
as $func$
#variable_conflict use_column
declare
    ids text[];
    texts text[];
    q record;
    fusion text;
    run @extschema@.hybrid_search_run_row[] := '{}';
    bad integer;
begin
    perform @extschema@._check_search_arguments('hybrid_search_evaluate', k, null);
    if queries is null or qrels is null then
        raise exception 'hybrid_search_evaluate: queries and qrels must be tables'
        using errcode = 'invalid_parameter_value';
    end if;
    perform @extschema@._check_table_columns('hybrid_search_evaluate', 'queries', queries, array['id', 'query']::name[]);
    perform @extschema@._check_table_columns(
        'hybrid_search_evaluate', 'qrels', qrels, array['query_id', 'doc_id', 'relevance']::name[]
    );
    execute pg_catalog.format(
        'select array_agg(q.id::text order by q.id::text), array_agg(q.query::text order by q.id::text)'
        ' from %s as q',
        queries
    ) into ids, texts;
    bad := pg_catalog.array_position(ids, null);
    if bad is null then
        select i.o::integer into bad
        from pg_catalog.unnest(texts) with ordinality as i (query, o)
        where i.query is null or pg_catalog.btrim(i.query) = ''
        limit 1;
    end if;
    if bad is not null then
        raise exception 'hybrid_search_evaluate: queries table % has a row with %', queries,
            case when ids[bad] is null then 'a NULL id' else pg_catalog.format('no query text (id %s)', ids[bad]) end
        using
            errcode = 'null_value_not_allowed',
            hint = pg_catalog.format('give every row of %s an id and a non-empty query, or leave it out', queries);
    end if;
    for q in
        select i.id, i.query, e.dense, e.sparse
        from rows from (pg_catalog.unnest(ids), pg_catalog.unnest(texts)) with ordinality as i (id, query, ord)
        inner join @extschema@.embed_batch(texts) as e on i.ord = e.ord
    loop
        run := run
            || array(
                select row(q.id, 'dense', l.rank, l.id)::@extschema@.hybrid_search_run_row
                from @extschema@.dense_search(q.dense, k) as l
            )
            || array(
                select row(q.id, 'sparse', l.rank, l.id)::@extschema@.hybrid_search_run_row
                from @extschema@.sparse_search(q.sparse, k) as l
            )
            || array(
                select row(q.id, 'keyword', l.rank, l.id)::@extschema@.hybrid_search_run_row
                from @extschema@.keyword_search(q.query, k) as l
            );
        foreach fusion in array array['rrf', 'weighted', 'raw'] loop
            run := run || array(
                select row(
                    q.id, 'hybrid ' || fusion, row_number() over (order by h.score desc, h.id), h.id
                )::@extschema@.hybrid_search_run_row
                from @extschema@.hybrid_search(
                    q.query, q.dense, q.sparse, k,
                    fusion => fusion, dense_weight => dense_weight, sparse_weight => sparse_weight,
                    keyword_weight => keyword_weight, candidates => candidates, rrf_k => rrf_k
                ) as h
            );
        end loop;
    end loop;
    return query select * from @extschema@.hybrid_search_score_run(run, qrels, k, ids);
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_evaluate is
'nDCG@k, recall@k and MRR@k of each leg and each fusion over judged queries (id, query) and qrels';
