-------------------------------------------------------------------------------
-- hybrid_search_result
-- One fused result: the document, its fused score, and each leg's rank and
-- score (NULL where that leg did not return the document).
-- (a type has no CREATE OR REPLACE; upgrades change it with ALTER TYPE)
do $block$
begin
    if pg_catalog.to_regtype('@extschema@.hybrid_search_result') is null then
        create type @extschema@.hybrid_search_result as (
            id bigint,
            content text,
            metadata jsonb,
            score double precision,
            dense_rank integer,
            dense_score double precision,
            sparse_rank integer,
            sparse_score double precision,
            keyword_rank integer,
            keyword_score double precision,
            colbert_rank integer,
            colbert_score double precision
        );
    end if;
end;
$block$;

comment on type @extschema@.hybrid_search_result is
'a hybrid_search row: document, fused score, and each leg''s rank and score (colbert: re-ranking)';

-------------------------------------------------------------------------------
-- hybrid_search (query vectors)
-- Fuses the dense, sparse and keyword legs, each asked for
-- greatest(candidates, k) documents under the same metadata filter.
--   fusion 'weighted' (default): score = sum of weight * min-max normalised
--                      leg score, divided by the sum of weights (defaults
--                      dense 0.4, sparse 0.2 as in BGE-M3's compute_score;
--                      keyword 0.2). The default because a weak leg cannot
--                      pull it below the strong ones as much as equal-vote
--                      RRF (README, Measuring quality).
--   fusion 'rrf':      score = sum over legs of weight / (rrf_k + rank)
--                      (weights default to 1)
--   fusion 'raw':      score = sum of weight * raw leg score (BGE-M3's
--                      weights: dense 0.4, sparse 0.2; keyword 0, as BM25
--                      scores are unbounded)
-- A leg whose query is NULL (or whose weight is 0) is skipped. Ties are broken
-- by id, so the order is deterministic. source narrows the search to the rows
-- of one table enabled with hybrid_search_enable.
-- colbert_rerank => N (BGE-M3 only; off when NULL or 0): the fused top
-- greatest(N, k) are re-scored with ColBERT MaxSim (colbert_rerank()), a
-- fourth leg fused over those candidates with the same fusion: weighted adds
-- colbert_weight (default 0.4) times its min-max normalised score and divides
-- by the sum of weights, raw adds colbert_weight times MaxSim (with the raw
-- defaults this is BGE-M3's dense 0.4 + sparse 0.2 + colbert 0.4 'All'
-- score), rrf adds colbert_weight (default 1) / (rrf_k + its rank).
create or replace function @extschema@.hybrid_search(
    query text,
    query_dense @extschema:vector@.vector,
    query_sparse @extschema:vector@.sparsevec,
    k integer default 10,
    fusion text default 'weighted',
    dense_weight double precision default null,
    sparse_weight double precision default null,
    keyword_weight double precision default null,
    candidates integer default 100,
    filter jsonb default null,
    rrf_k integer default 60,
    ef_search integer default 100,
    source regclass default null,
    colbert_rerank integer default null,
    colbert_weight double precision default null
) returns setof @extschema@.hybrid_search_result
as $func$
#variable_conflict use_column
declare
    rrf boolean := fusion = 'rrf';
    w_dense double precision;
    w_sparse double precision;
    w_keyword double precision;
    w_colbert double precision;
    per_leg integer;
    rerank boolean := coalesce(colbert_rerank, 0) <> 0;
    shortlist integer := k;
    bad_weight text;
    bad_value double precision;
    sharded boolean := @extschema@._is_coordinator();
begin
    perform @extschema@._check_search_arguments('hybrid_search', k, filter);
    if fusion is null or fusion not in ('rrf', 'weighted', 'raw') then
        raise exception 'hybrid_search: unknown fusion %, expected ''rrf'', ''weighted'' or ''raw''',
            coalesce(pg_catalog.quote_literal(fusion), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if candidates is null or candidates < 1 or candidates > 10000 then
        raise exception 'hybrid_search: candidates must be between 1 and 10000, got %',
            coalesce(candidates::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if rrf_k is null or rrf_k < 0 or rrf_k > 1000000 then
        raise exception 'hybrid_search: rrf_k must be between 0 and 1000000, got %', coalesce(rrf_k::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    -- weights are relative; bounded, their sums and products never overflow
    select w.name, w.value into bad_weight, bad_value
    from (
        values
        ('dense_weight', dense_weight), ('sparse_weight', sparse_weight),
        ('keyword_weight', keyword_weight), ('colbert_weight', colbert_weight)
    ) as w (name, value)
    where w.value < 0 or w.value > 1e9 or w.value = 'NaN'
    limit 1;
    if bad_weight is not null then
        raise exception 'hybrid_search: % must be between 0 and 1e9 (or NULL for its default), got %',
            bad_weight, bad_value
        using errcode = 'invalid_parameter_value';
    end if;

    w_dense := case when query_dense is null then 0
        else coalesce(dense_weight, case when rrf then 1 else 0.4 end) end;
    w_sparse := case when query_sparse is null then 0
        else coalesce(sparse_weight, case when rrf then 1 else 0.2 end) end;
    w_keyword := case when query is null or pg_catalog.btrim(query) = '' then 0
        else coalesce(keyword_weight, case fusion when 'rrf' then 1 when 'raw' then 0 else 0.2 end) end;
    if w_dense + w_sparse + w_keyword = 0 then
        raise exception 'hybrid_search: nothing to search: every leg has weight 0 or no query'
        using errcode = 'invalid_parameter_value';
    end if;
    if rerank then
        if colbert_rerank < 1 or colbert_rerank > 1000 then
            raise exception 'hybrid_search: colbert_rerank must be between 1 and 1000 (or NULL), got %',
                colbert_rerank
            using errcode = 'invalid_parameter_value';
        end if;
        if query is null or pg_catalog.btrim(query) = '' then
            raise exception 'hybrid_search: colbert_rerank needs the query text'
            using errcode = 'invalid_parameter_value';
        end if;
        perform @extschema@._colbert_check_encoders('hybrid_search');
        shortlist := greatest(colbert_rerank, k);
    end if;
    w_colbert := case when rerank then coalesce(colbert_weight, case when rrf then 1 else 0.4 end) else 0 end;
    per_leg := greatest(candidates, k);
    filter := @extschema@._source_filter(source, filter);

    if sharded and (rerank or source is not null) then
        raise exception 'hybrid_search: colbert_rerank and source are not supported on a coordinator'
        using errcode = 'feature_not_supported';
    end if;

    return query
    -- on a coordinator every leg's candidates come from every shard at once
    -- (040_shards.sql)
    with shard_legs as materialized (
        select l.leg, l.id, l.rank, l.score
        from @extschema@._coordinator_legs(
            'hybrid_search',
            case when w_keyword > 0 then query end,
            case when w_dense > 0 then query_dense end,
            case when w_sparse > 0 then query_sparse end,
            per_leg, filter, ef_search
        ) as l
        where sharded
    ),

    dense as (
        select l.id, l.rank, l.score
        from @extschema@.dense_search(query_dense, per_leg, filter, ef_search) as l
        where w_dense > 0 and not sharded
        union all
        select l.id, l.rank, l.score from shard_legs as l where l.leg = 'dense'
    ),

    sparse as (
        select l.id, l.rank, l.score
        from @extschema@.sparse_search(query_sparse, per_leg, filter) as l
        where w_sparse > 0 and not sharded
        union all
        select l.id, l.rank, l.score from shard_legs as l where l.leg = 'sparse'
    ),

    keyword as (
        select l.id, l.rank, l.score
        from @extschema@.keyword_search(query, per_leg, filter) as l
        where w_keyword > 0 and not sharded
        union all
        select l.id, l.rank, l.score from shard_legs as l where l.leg = 'keyword'
    ),

    joined as (
        select
            coalesce(d.id, s.id, kw.id) as id,
            d.rank as d_rank,
            d.score as d_score,
            s.rank as s_rank,
            s.score as s_score,
            kw.rank as k_rank,
            kw.score as k_score,
            (d.score - min(d.score) over ()) / nullif(max(d.score) over () - min(d.score) over (), 0) as d_norm,
            (s.score - min(s.score) over ()) / nullif(max(s.score) over () - min(s.score) over (), 0) as s_norm,
            (kw.score - min(kw.score) over ()) / nullif(max(kw.score) over () - min(kw.score) over (), 0) as k_norm
        from dense as d
        full join sparse as s on d.id = s.id
        full join keyword as kw on coalesce(d.id, s.id) = kw.id
    ),

    fused as (
        select
            j.*,
            case
                when rrf then
                    coalesce(w_dense / (rrf_k + j.d_rank), 0)
                    + coalesce(w_sparse / (rrf_k + j.s_rank), 0)
                    + coalesce(w_keyword / (rrf_k + j.k_rank), 0)
                when fusion = 'raw' then
                    w_dense * coalesce(j.d_score, 0)
                    + w_sparse * coalesce(j.s_score, 0)
                    + w_keyword * coalesce(j.k_score, 0)
                else (
                    -- a leg whose candidates all score the same normalises to 1
                    w_dense * case when j.d_rank is null then 0 else coalesce(j.d_norm, 1) end
                    + w_sparse * case when j.s_rank is null then 0 else coalesce(j.s_norm, 1) end
                    + w_keyword * case when j.k_rank is null then 0 else coalesce(j.k_norm, 1) end
                ) / (w_dense + w_sparse + w_keyword)
            end as fused_score
        from joined as j
    ),

    -- only the winners are joined to documents (the planner cannot know
    -- how few rows the legs return and would otherwise scan the table)
    shortlisted as (
        select * from fused as f
        order by f.fused_score desc, f.id
        limit shortlist
    ),

    colbert as (
        select c.id, c.rank, c.score
        from @extschema@.colbert_rerank(query, array(select sl.id from shortlisted as sl)) as c
        where rerank
    ),

    reranked as (
        select
            sl.*,
            c.rank as c_rank,
            c.score as c_score,
            case
                when not rerank then sl.fused_score
                when rrf then sl.fused_score + coalesce(w_colbert / (rrf_k + c.rank), 0)
                when fusion = 'raw' then sl.fused_score + w_colbert * coalesce(c.score, 0)
                else (
                    sl.fused_score * (w_dense + w_sparse + w_keyword)
                    + w_colbert * case
                        when c.rank is null then 0
                        else coalesce(
                            (c.score - min(c.score) over ())
                            / nullif(max(c.score) over () - min(c.score) over (), 0),
                            1
                        )
                    end
                ) / (w_dense + w_sparse + w_keyword + w_colbert)
            end as final_score
        from shortlisted as sl
        left join colbert as c on sl.id = c.id
    ),

    best as (
        select * from reranked as r
        order by r.final_score desc, r.id
        limit k
    ),

    -- on a coordinator the winners' rows come from their shards
    doc as (
        select d.id, d.content, d.metadata
        from @extschema@.documents as d
        where not sharded and d.id in (select b.id from best as b)
        union all
        select d.id, d.content, d.metadata
        from @extschema@._coordinator_documents(
            'hybrid_search', array(select b.id from best as b), filter
        ) as d
        where sharded
    )

    select
        b.id,
        doc.content,
        doc.metadata,
        b.final_score,
        b.d_rank,
        b.d_score,
        b.s_rank,
        b.s_score,
        b.k_rank,
        b.k_score,
        b.c_rank,
        b.c_score
    from best as b
    inner join doc on b.id = doc.id
    order by b.final_score desc, b.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search(
    text, @extschema:vector@.vector, @extschema:vector@.sparsevec,
    integer, text, double precision, double precision, double precision, integer, jsonb, integer, integer,
    regclass, integer, double precision
) is
'hybrid search with query vectors computed elsewhere (query text feeds the keyword leg and ColBERT re-ranking)';

-------------------------------------------------------------------------------
-- hybrid_search (text)
-- Embeds the query once (dense and sparse from one forward pass, and ColBERT
-- vectors in the same pass when colbert_rerank is asked for) and fuses the
-- legs as above.
create or replace function @extschema@.hybrid_search(
    query text,
    k integer default 10,
    fusion text default 'weighted',
    dense_weight double precision default null,
    sparse_weight double precision default null,
    keyword_weight double precision default null,
    candidates integer default 100,
    filter jsonb default null,
    rrf_k integer default 60,
    ef_search integer default 100,
    source regclass default null,
    colbert_rerank integer default null,
    colbert_weight double precision default null
) returns setof @extschema@.hybrid_search_result
as $func$
#variable_conflict use_column
declare
    q record;
begin
    perform @extschema@._check_query_text('hybrid_search', query);
    perform @extschema@._check_query_model('hybrid_search');
    perform @extschema@._check_search_arguments('hybrid_search', k, filter);
    if colbert_rerank > 0 then
        perform @extschema@._colbert_check_encoders('hybrid_search');
        perform @extschema@._colbert_query(query);  -- all three heads in one forward pass
    end if;
    select * into q from @extschema@.embed(query);
    return query
    select * from @extschema@.hybrid_search(
        query, q.dense, q.sparse,
        k => k, fusion => fusion,
        dense_weight => dense_weight, sparse_weight => sparse_weight,
        keyword_weight => keyword_weight,
        candidates => candidates, filter => filter, rrf_k => rrf_k, ef_search => ef_search,
        source => source, colbert_rerank => colbert_rerank, colbert_weight => colbert_weight
    );
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search(
    text, integer, text, double precision, double precision, double precision, integer, jsonb, integer,
    integer, regclass, integer, double precision
) is
'hybrid dense + sparse + full-text search for query: id, content, metadata, fused score and each leg''s rank and score';
