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
-- _hybrid_search_options
-- hybrid_search's options as the caller gave them (NULL: the default), so
-- that both overloads hand them on as one value.
do $block$
begin
    if pg_catalog.to_regtype('@extschema@._hybrid_search_options') is null then
        create type @extschema@._hybrid_search_options as (
            k integer,
            fusion text,
            dense_weight double precision,
            sparse_weight double precision,
            keyword_weight double precision,
            candidates integer,
            filter jsonb,
            rrf_k integer,
            ef_search integer,
            source regclass,
            colbert_rerank integer,
            colbert_weight double precision
        );
    end if;
end;
$block$;

comment on type @extschema@._hybrid_search_options is
'hybrid_search''s options as given (NULL: the default), checked by _hybrid_search_plan()';

-------------------------------------------------------------------------------
-- _hybrid_search_plan (type)
-- A hybrid search resolved once: each leg's weight (0: the leg is skipped),
-- how many candidates each leg returns, how many fused rows are kept (k, or
-- the ColBERT shortlist), and the metadata filter with the source folded in.
do $block$
begin
    if pg_catalog.to_regtype('@extschema@._hybrid_search_plan') is null then
        create type @extschema@._hybrid_search_plan as (
            k integer,
            fusion text,
            dense_weight double precision,
            sparse_weight double precision,
            keyword_weight double precision,
            rerank boolean,
            colbert_weight double precision,
            per_leg integer,
            shortlist integer,
            filter jsonb,
            rrf_k integer,
            ef_search integer,
            sharded boolean
        );
    end if;
end;
$block$;

comment on type @extschema@._hybrid_search_plan is
'a hybrid search resolved by _hybrid_search_plan(): leg weights, candidates per leg, shortlist, filter, sharded';

-------------------------------------------------------------------------------
-- _hybrid_search_plan
-- hybrid_search's argument checks and defaults, so every bad option gets its
-- error before any leg runs. Weights default by fusion: weighted (dense 0.4,
-- sparse 0.2 as in BGE-M3's compute_score, keyword 0.2, colbert 0.4), rrf
-- (1 each), raw (BGE-M3's dense 0.4, sparse 0.2, colbert 0.4; keyword 0, as
-- BM25 scores are unbounded). A leg without a query has weight 0. Whether
-- this database is a coordinator (docs/sharding.md) is asked here, once.
create or replace function @extschema@._hybrid_search_plan(
    query text,
    has_dense boolean,
    has_sparse boolean,
    options @extschema@._hybrid_search_options
) returns @extschema@._hybrid_search_plan
as $func$
declare
    o @extschema@._hybrid_search_options := options;
    rrf boolean := o.fusion = 'rrf';
    has_text boolean := query is not null and pg_catalog.btrim(query) <> '';
    plan @extschema@._hybrid_search_plan;
    bad_weight text;
    bad_value double precision;
begin
    perform @extschema@._check_search_arguments('hybrid_search', o.k, o.filter);
    if o.fusion is null or o.fusion not in ('rrf', 'weighted', 'raw') then
        raise exception 'hybrid_search: unknown fusion %, expected ''rrf'', ''weighted'' or ''raw''',
            coalesce(pg_catalog.quote_literal(o.fusion), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if o.candidates is null or o.candidates < 1 or o.candidates > 10000 then
        raise exception 'hybrid_search: candidates must be between 1 and 10000, got %',
            coalesce(o.candidates::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    if o.rrf_k is null or o.rrf_k < 0 or o.rrf_k > 1000000 then
        raise exception 'hybrid_search: rrf_k must be between 0 and 1000000, got %', coalesce(o.rrf_k::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    -- weights are relative; bounded, their sums and products never overflow
    select w.name, w.value into bad_weight, bad_value
    from (
        values
        ('dense_weight', o.dense_weight), ('sparse_weight', o.sparse_weight),
        ('keyword_weight', o.keyword_weight), ('colbert_weight', o.colbert_weight)
    ) as w (name, value)
    where w.value < 0 or w.value > 1e9 or w.value = 'NaN'
    limit 1;
    if bad_weight is not null then
        raise exception 'hybrid_search: % must be between 0 and 1e9 (or NULL for its default), got %',
            bad_weight, bad_value
        using errcode = 'invalid_parameter_value';
    end if;

    plan.k := o.k;
    plan.fusion := o.fusion;
    plan.rrf_k := o.rrf_k;
    plan.ef_search := o.ef_search;
    plan.dense_weight := case when not has_dense then 0
        else coalesce(o.dense_weight, case when rrf then 1 else 0.4 end) end;
    plan.sparse_weight := case when not has_sparse then 0
        else coalesce(o.sparse_weight, case when rrf then 1 else 0.2 end) end;
    plan.keyword_weight := case when not has_text then 0
        else coalesce(o.keyword_weight, case o.fusion when 'rrf' then 1 when 'raw' then 0 else 0.2 end) end;
    if plan.dense_weight + plan.sparse_weight + plan.keyword_weight = 0 then
        raise exception 'hybrid_search: nothing to search: every leg has weight 0 or no query'
        using errcode = 'invalid_parameter_value';
    end if;
    plan.rerank := coalesce(o.colbert_rerank, 0) <> 0;
    plan.shortlist := o.k;
    if plan.rerank then
        if o.colbert_rerank < 1 or o.colbert_rerank > 1000 then
            raise exception 'hybrid_search: colbert_rerank must be between 1 and 1000 (or NULL), got %',
                o.colbert_rerank
            using errcode = 'invalid_parameter_value';
        end if;
        if not has_text then
            raise exception 'hybrid_search: colbert_rerank needs the query text'
            using errcode = 'invalid_parameter_value';
        end if;
        perform @extschema@._colbert_check_encoders('hybrid_search');
        plan.shortlist := greatest(o.colbert_rerank, o.k);
    end if;
    plan.colbert_weight := case when plan.rerank then coalesce(o.colbert_weight, case when rrf then 1 else 0.4 end)
        else 0 end;
    plan.per_leg := greatest(o.candidates, o.k);
    plan.filter := @extschema@._source_filter(o.source, o.filter);
    plan.sharded := @extschema@._is_coordinator();
    if plan.sharded and (plan.rerank or o.source is not null) then
        raise exception 'hybrid_search: colbert_rerank and source are not supported on a coordinator'
        using errcode = 'feature_not_supported';
    end if;
    -- dense_search's own check, which the fused statement does not call
    if plan.dense_weight > 0 and (o.ef_search is null or o.ef_search < 1 or o.ef_search > 1000) then
        raise exception 'dense_search: ef_search must be between 1 and 1000, got %',
            coalesce(o.ef_search::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    return plan;
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _hybrid_search_fuse
-- The fusion: the three legs, each asked for plan.per_leg documents under
-- plan.filter, fused, best first (ties by id), the top plan.shortlist. One
-- statement whose plan each backend caches: each leg is the index scan its
-- own function runs (dense_search, sparse_search, keyword_search: the same
-- rows, ranks and scores, with the settings they set), and a skipped leg is
-- not scanned. With documents_dense_idx over halfvec (its ORDER BY names the
-- dimensions) the dense leg is a call of dense_search. On a coordinator
-- (plan.sharded) every leg's candidates come from every shard at once
-- (_coordinator_legs, 017_coordinator.sql) and no local leg is scanned.
--   weighted: sum of weight * min-max normalised leg score, divided by the
--             sum of weights (a leg whose candidates all score the same
--             normalises to 1)
--   rrf:      sum over legs of weight / (rrf_k + rank)
--   raw:      sum of weight * raw leg score
create or replace function @extschema@._hybrid_search_fuse(
    query text,
    query_dense @extschema:vector@.vector,
    query_sparse @extschema:vector@.sparsevec,
    bm25 @extschema@.bm25query,
    plan @extschema@._hybrid_search_plan
) returns table (
    id bigint,
    score double precision,
    dense_rank integer,
    dense_score double precision,
    sparse_rank integer,
    sparse_score double precision,
    keyword_rank integer,
    keyword_score double precision
)
as $func$
#variable_conflict use_column
declare
    p @extschema@._hybrid_search_plan := plan;
    halfvec_index boolean := p.dense_weight > 0 and not p.sharded
        and @extschema@._dense_index_halfvec_dimensions() is not null;
    dense_scan boolean := p.dense_weight > 0 and not p.sharded and not halfvec_index;
    saved text[];
begin
    -- sequential scans off for every leg (ef_search, when there is no dense leg,
    -- is unchecked and unused); a filtered call is planned with its filter's
    -- value, which the sparse and BM25 legs take as an index condition
    saved := @extschema@._search_settings_push(p.per_leg, coalesce(p.ef_search, 100), p.filter is not null);
    if p.filter is not null or pg_catalog.row_security_active('@extschema@.documents') then
        -- the legs run in one statement: the first to need the rows of the
        -- filter or of the policy's condition finds them in another index,
        -- and the others take them from their first batch (sparse_filter.c
        -- keeps them for the statement's snapshot). From the second batch
        -- on, not the fourth: where a filter's rows are too many for the
        -- first batch (sparse_scan.c's first_batch_keys; before session 37,
        -- a 10% filter's at a million rows), two more batches of rows it
        -- rejects cost more than finding them; a filter every row meets
        -- fills the first batch and finds none (performance.md, session 35)
        saved := saved || array[
            'hybrid_search.sparse_filter_after',
            coalesce(pg_catalog.current_setting('hybrid_search.sparse_filter_after', true), '3')
        ];
        perform pg_catalog.set_config(
            'hybrid_search.sparse_filter_after',
            least(saved[pg_catalog.cardinality(saved)]::integer, 1)::text,
            true
        );
    end if;
    return query
    with shard_legs as materialized (
        select l.leg, l.id, l.rank, l.score
        from @extschema@._coordinator_legs(
            'hybrid_search',
            case when p.keyword_weight > 0 then query end,
            case when p.dense_weight > 0 then query_dense end,
            case when p.sparse_weight > 0 then query_sparse end,
            p.per_leg, p.filter, p.ef_search
        ) as l
        where p.sharded
    ),

    dense as (
        select
            n.id,
            (row_number() over (order by n.distance, n.id))::integer as rank,
            1 - n.distance as score
        from (
            -- ordered by distance alone so that the index can deliver the order
            select
                d.id,
                d.dense operator(@extschema:vector@.<=>) query_dense as distance
            from @extschema@.documents as d
            where
                dense_scan
                and d.dense is not null and (p.filter is null or d.metadata @> p.filter)
            order by d.dense operator(@extschema:vector@.<=>) query_dense
            limit p.per_leg
        ) as n
        union all
        select l.id, l.rank, l.score
        from @extschema@.dense_search(query_dense, p.per_leg, p.filter, p.ef_search) as l
        where halfvec_index
        union all
        select l.id, l.rank, l.score from shard_legs as l where l.leg = 'dense'
    ),

    sparse as (
        (
            select
                n.id,
                (row_number() over (order by n.negative_dot, n.id))::integer as rank,
                -n.negative_dot as score
            from (
                select
                    d.id,
                    d.sparse operator(@extschema:vector@.<#>) query_sparse as negative_dot
                from @extschema@.documents as d
                where
                    p.sparse_weight > 0 and not p.sharded
                    and d.sparse is not null and (p.filter is null or d.metadata @> p.filter)
                order by negative_dot
                fetch first p.per_leg rows with ties
            ) as n
            where n.negative_dot < 0
            order by n.negative_dot, n.id
            limit p.per_leg
        )
        union all
        select l.id, l.rank, l.score from shard_legs as l where l.leg = 'sparse'
    ),

    keyword as (
        (
            select
                n.id,
                (row_number() over (order by n.distance, n.id))::integer as rank,
                -n.distance as score
            from (
                select
                    d.id,
                    d.fts operator(@extschema@.<&>) bm25 as distance
                from @extschema@.documents as d
                where
                    p.keyword_weight > 0 and not p.sharded
                    and d.fts is not null and (p.filter is null or d.metadata @> p.filter)
                order by distance
                fetch first p.per_leg rows with ties
            ) as n
            where n.distance < 0
            order by n.distance, n.id
            limit p.per_leg
        )
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
                when p.fusion = 'rrf' then
                    coalesce(p.dense_weight / (p.rrf_k + j.d_rank), 0)
                    + coalesce(p.sparse_weight / (p.rrf_k + j.s_rank), 0)
                    + coalesce(p.keyword_weight / (p.rrf_k + j.k_rank), 0)
                when p.fusion = 'raw' then
                    p.dense_weight * coalesce(j.d_score, 0)
                    + p.sparse_weight * coalesce(j.s_score, 0)
                    + p.keyword_weight * coalesce(j.k_score, 0)
                else (
                    p.dense_weight * case when j.d_rank is null then 0 else coalesce(j.d_norm, 1) end
                    + p.sparse_weight * case when j.s_rank is null then 0 else coalesce(j.s_norm, 1) end
                    + p.keyword_weight * case when j.k_rank is null then 0 else coalesce(j.k_norm, 1) end
                ) / (p.dense_weight + p.sparse_weight + p.keyword_weight)
            end as fused_score
        from joined as j
    )

    select f.id, f.fused_score, f.d_rank, f.d_score, f.s_rank, f.s_score, f.k_rank, f.k_score
    from fused as f
    order by f.fused_score desc, f.id
    limit p.shortlist;
    perform @extschema@._search_settings_pop(saved);
end;
$func$
language plpgsql stable parallel unsafe security invoker rows 100
set search_path to pg_catalog, pg_temp
-- the sparse and BM25 legs end at their last row scoring above 0, as
-- sparse_search's and keyword_search's do
set "hybrid_search.sparse_positive_only" to on
-- with sequential scans off, a leg the dense index cannot serve (a halfvec
-- index, a row-level-security policy) costs over jit_above_cost, and
-- JIT-compiling the statement (~0.7 s) costs far more than running it
set jit to off;

-------------------------------------------------------------------------------
-- _hybrid_search_rerank
-- The re-ranking stage: the fused shortlist (ids and fused scores, best
-- first) re-scored with ColBERT MaxSim (colbert_rerank()), a fourth leg
-- fused over those candidates with the same fusion: weighted adds
-- colbert_weight times its min-max normalised score and divides by the sum
-- of weights, raw adds colbert_weight times MaxSim (with the raw defaults
-- this is BGE-M3's dense 0.4 + sparse 0.2 + colbert 0.4 'All' score), rrf
-- adds colbert_weight / (rrf_k + its rank). Every shortlisted id with its
-- ColBERT rank and score and its final score.
create or replace function @extschema@._hybrid_search_rerank(
    query text,
    ids bigint[],
    fused_scores double precision[],
    plan @extschema@._hybrid_search_plan
) returns table (id bigint, colbert_rank integer, colbert_score double precision, score double precision)
as $func$
    with colbert as (
        select c.id, c.rank, c.score
        from @extschema@.colbert_rerank(query, ids) as c
    )

    select
        sl.id,
        c.rank,
        c.score,
        case
            when (plan).fusion = 'rrf' then sl.fused_score + coalesce((plan).colbert_weight / ((plan).rrf_k + c.rank), 0)
            when (plan).fusion = 'raw' then sl.fused_score + (plan).colbert_weight * coalesce(c.score, 0)
            else (
                sl.fused_score * ((plan).dense_weight + (plan).sparse_weight + (plan).keyword_weight)
                + (plan).colbert_weight * case
                    when c.rank is null then 0
                    else coalesce(
                        (c.score - min(c.score) over ())
                        / nullif(max(c.score) over () - min(c.score) over (), 0),
                        1
                    )
                end
            ) / ((plan).dense_weight + (plan).sparse_weight + (plan).keyword_weight + (plan).colbert_weight)
        end
    from rows from (pg_catalog.unnest(ids), pg_catalog.unnest(fused_scores)) as sl (id, fused_score)
    left join colbert as c on sl.id = c.id
$func$
language sql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _hybrid_search
-- What both hybrid_search overloads run: the plan (checks and defaults), the
-- keyword leg's bm25query, the fusion, the re-ranking when asked for, and
-- the top k with their documents (on a coordinator, from their shards:
-- _coordinator_documents).
create or replace function @extschema@._hybrid_search(
    query text,
    query_dense @extschema:vector@.vector,
    query_sparse @extschema:vector@.sparsevec,
    options @extschema@._hybrid_search_options
) returns setof @extschema@.hybrid_search_result
as $func$
#variable_conflict use_column
declare
    p @extschema@._hybrid_search_plan := @extschema@._hybrid_search_plan(
        query, query_dense is not null, query_sparse is not null, options
    );
    bm25 @extschema@.bm25query;
begin
    if p.keyword_weight > 0 and not p.sharded then
        bm25 := @extschema@._keyword_bm25query(
            'keyword_search', query, (select s.text_search_config from @extschema@.hybrid_search_settings as s)
        );
    end if;
    if p.sharded then
        return query
        with fused as materialized (
            select * from @extschema@._hybrid_search_fuse(query, query_dense, query_sparse, bm25, p)
        )

        select
            f.id, doc.content, doc.metadata, f.score, f.dense_rank, f.dense_score, f.sparse_rank, f.sparse_score,
            f.keyword_rank, f.keyword_score, null::integer, null::double precision
        from fused as f
        inner join @extschema@._coordinator_documents(
            'hybrid_search', array(select w.id from fused as w), p.filter
        ) as doc on f.id = doc.id
        order by f.score desc, f.id;
        return;
    end if;
    if not p.rerank then
        -- only the winners are joined to documents
        return query
        select
            f.id, doc.content, doc.metadata, f.score, f.dense_rank, f.dense_score, f.sparse_rank, f.sparse_score,
            f.keyword_rank, f.keyword_score, null::integer, null::double precision
        from @extschema@._hybrid_search_fuse(query, query_dense, query_sparse, bm25, p) as f
        inner join @extschema@.documents as doc on f.id = doc.id
        order by f.score desc, f.id;
        return;
    end if;
    return query
    with shortlisted as materialized (
        select * from @extschema@._hybrid_search_fuse(query, query_dense, query_sparse, bm25, p)
    ),

    best as (
        select sl.*, r.colbert_rank, r.colbert_score, r.score as final_score
        from shortlisted as sl
        inner join @extschema@._hybrid_search_rerank(
            query,
            array(select s.id from shortlisted as s order by s.score desc, s.id),
            array(select s.score from shortlisted as s order by s.score desc, s.id),
            p
        ) as r on sl.id = r.id
        order by r.score desc, sl.id
        limit p.k
    )

    select
        b.id, doc.content, doc.metadata, b.final_score, b.dense_rank, b.dense_score, b.sparse_rank,
        b.sparse_score, b.keyword_rank, b.keyword_score, b.colbert_rank, b.colbert_score
    from best as b
    inner join @extschema@.documents as doc on b.id = doc.id
    order by b.final_score desc, b.id;
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

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
-- greatest(N, k) are re-scored with ColBERT MaxSim, a fourth leg fused with
-- the same fusion (_hybrid_search_rerank).
-- plpgsql, not sql: a sql function with a SET clause is parsed and planned
-- again at every call, where plpgsql keeps its plan.
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
begin
    return query
    select h.*
    from @extschema@._hybrid_search(
        $1, $2, $3, row($4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)::@extschema@._hybrid_search_options
    ) as h;
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
-- Checks the options, embeds the query once (dense and sparse from one
-- forward pass, and ColBERT vectors in the same pass when colbert_rerank is
-- asked for) and searches as above.
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
declare
    options @extschema@._hybrid_search_options := row(
        $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
    );
    q record;
begin
    perform @extschema@._check_query_text('hybrid_search', query);
    perform @extschema@._check_query_model('hybrid_search');
    if (@extschema@._hybrid_search_plan(query, true, true, options)).rerank then
        perform @extschema@._colbert_query(query);  -- all three heads in one forward pass
    end if;
    select * into q from @extschema@.embed(query);
    return query select * from @extschema@._hybrid_search(query, q.dense, q.sparse, options);
end;
$func$
language plpgsql stable parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search(
    text, integer, text, double precision, double precision, double precision, integer, jsonb, integer,
    integer, regclass, integer, double precision
) is
'hybrid dense + sparse + full-text search for query: id, content, metadata, fused score and each leg''s rank and score';
