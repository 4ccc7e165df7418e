-------------------------------------------------------------------------------
-- _token_stats_rows
-- Per token of documents.sparse: documents carrying it and its largest
-- weight. A function, so that the view below does not depend on the column
-- (hybrid_search_set_model changes its type).
create or replace function @extschema@._token_stats_rows()
returns table (token_id integer, document_frequency bigint, max_weight real)
as $func$
    select
        e.token_id,
        count(*),
        max(e.weight)
    from @extschema@.documents as d
    cross join lateral @extschema@.sparse_entries(d.sparse) as e
    group by e.token_id;
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_token_stats
-- Per token: how many documents carry it and its largest weight, as of the
-- last hybrid_search_refresh(). weight * max_weight bounds what a query token
-- can add to any document's sparse score, and the view shows which tokens
-- are common or rare.
create materialized view if not exists @extschema@.hybrid_search_token_stats as
select
    t.token_id,
    t.document_frequency,
    t.max_weight
from @extschema@._token_stats_rows() as t;

create unique index if not exists hybrid_search_token_stats_token_id_idx
on @extschema@.hybrid_search_token_stats (token_id);

comment on materialized view @extschema@.hybrid_search_token_stats is
'per-token document frequency and maximum weight of documents.sparse; refresh with hybrid_search_refresh()';

-------------------------------------------------------------------------------
-- _index_truncated
-- TRUNCATE documents empties derived relations (tg_argv: tables are emptied,
-- a populated materialized view is refreshed) in the same transaction. Runs
-- as the owner: whoever may truncate documents needs no right on them.
create or replace function @extschema@._index_truncated()
returns trigger
as $func$
declare
    index_table text;
begin
    foreach index_table in array tg_argv loop
        if (select c.relkind from pg_catalog.pg_class as c where c.oid = index_table::regclass) = 'm' then
            if (select c.relispopulated from pg_catalog.pg_class as c where c.oid = index_table::regclass) then
                execute pg_catalog.format('refresh materialized view %s', index_table::regclass);
            end if;
        else
            execute pg_catalog.format('delete from %s', index_table::regclass);
        end if;
    end loop;
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-- TRUNCATE documents empties the statistics too.
create or replace trigger token_stats_truncated
after truncate on @extschema@.documents
for each statement execute function @extschema@._index_truncated(
    '@extschema@.hybrid_search_token_stats'
);

-------------------------------------------------------------------------------
-- hybrid_search_refresh
-- Refreshes hybrid_search_token_stats without blocking readers or writers
-- (a first refresh of the view, e.g. after pg_restore, cannot be concurrent
-- and blocks readers of it briefly). Both inverted indexes
-- (documents_sparse_idx, documents_fts_bm25_idx) take every write at once
-- and need no refresh.
create or replace function @extschema@.hybrid_search_refresh()
returns void
as $func$
begin
    if (
        select c.relispopulated from pg_catalog.pg_class as c
        where c.oid = '@extschema@.hybrid_search_token_stats'::regclass
    ) then
        refresh materialized view concurrently @extschema@.hybrid_search_token_stats;
    else
        refresh materialized view @extschema@.hybrid_search_token_stats;
    end if;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_refresh is
'refresh hybrid_search_token_stats (the inverted indexes need no refresh)';

-------------------------------------------------------------------------------
-- query_tokens
-- The query's BGE-M3 lexical weights with the token each id stands for.
create or replace function @extschema@.query_tokens(query text)
returns table (token_id integer, token text, weight real)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.query_tokens(plpy, query)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.query_tokens is
'tokens of query with their BGE-M3 lexical weights';

-------------------------------------------------------------------------------
-- sparse_explain
-- Why the sparse leg ranks as it does: each query token with its weight,
-- document frequency and the most it can add to any document's score
-- (as of the last hybrid_search_refresh()).
create or replace function @extschema@.sparse_explain(query text)
returns table (
    token_id integer,
    token text,
    query_weight real,
    document_frequency bigint,
    max_document_weight real,
    max_contribution double precision
)
as $func$
    select
        q.token_id,
        q.token,
        q.weight,
        coalesce(s.document_frequency, 0),
        s.max_weight,
        q.weight::double precision * coalesce(s.max_weight, 0)
    from @extschema@.query_tokens(query) as q
    left join @extschema@.hybrid_search_token_stats as s on q.token_id = s.token_id
    order by 6 desc, q.token_id;
$func$
language sql stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_explain is
'query tokens with weight, document frequency and maximum possible score contribution';
