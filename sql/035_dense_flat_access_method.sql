-------------------------------------------------------------------------------
-- dense_flat: an exact index access method over pgvector's vector for a
-- filtered ORDER BY col <=> q (extension/dense_*.c). It keeps each row's
-- vector as int8 codes with a bound on their error, scores only the rows a
-- condition on a filter column allows (found in another index of the table,
-- as sparse_inverted's filter columns are), and returns them in the order of
-- a lower bound of the cosine distance, which the executor rechecks: the
-- results are a sequential scan's. Without a condition it is never chosen
-- (it would score every row): the planner keeps pgvector's index. Inserts
-- are found by the next query, VACUUM marks dead rows, every change is
-- WAL-logged.
create or replace function @extschema@.dense_flat_handler(internal)
returns index_am_handler
as '$libdir/hybrid_search', 'dense_flat_handler'
language c strict
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_flat_handler(internal) is
'handler of the dense_flat index access method';

-- CREATE ACCESS METHOD and CREATE OPERATOR CLASS have no IF NOT EXISTS, and
-- this script is re-run by upgrades.
do $block$
begin
    if not exists (select from pg_catalog.pg_am where amname = 'dense_flat') then
        create access method dense_flat type index
        handler @extschema@.dense_flat_handler;
        comment on access method dense_flat is
        'exact filtered ORDER BY <=> over int8-coded vectors, rechecked (hybrid_search)';
    end if;
    if not exists (
        select from pg_catalog.pg_opclass as c
        inner join pg_catalog.pg_am as a on c.opcmethod = a.oid
        where a.amname = 'dense_flat' and c.opcname = 'vector_cosine_ops'
    ) then
        create operator class @extschema@.vector_cosine_ops
        default for type @extschema:vector@.vector using dense_flat as
        operator 1 @extschema:vector@.<=> (
            @extschema:vector@.vector, @extschema:vector@.vector
        ) for order by pg_catalog.float_ops;
    end if;
end;
$block$;

select @extschema@._create_filter_operator_classes('dense_flat');

-------------------------------------------------------------------------------
-- documents_dense_filter_idx: the dense leg's index under a metadata @>
-- filter; it scores only the rows documents_metadata_idx finds.
create index if not exists documents_dense_filter_idx on @extschema@.documents
using dense_flat (dense @extschema@.vector_cosine_ops, metadata @extschema@.jsonb_filter_ops);

-------------------------------------------------------------------------------
-- dense_flat_check
-- amcheck for a dense_flat index: its row chain, then every row the caller's
-- snapshot sees indexed with codes within their stated error of its vector,
-- and every other indexed row a dead or uncommitted one. Blocks VACUUM of the
-- table while it runs, not writes.
create or replace function @extschema@.dense_flat_check(index regclass)
returns jsonb
as '$libdir/hybrid_search', 'dense_flat_check'
language c strict volatile
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.dense_flat_check(regclass) is
'compare a dense_flat index with its table: {"consistent": bool, "problems": [...], counts}';

revoke all on function @extschema@.dense_flat_check(regclass) from public;
