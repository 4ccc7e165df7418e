-------------------------------------------------------------------------------
-- sparse_inverted: an index access method over pgvector's sparsevec
-- (extension/sparse_*.c). CREATE INDEX ... USING sparse_inverted (col
-- sparsevec_ip_ops) serves ORDER BY col <#> q (negative inner product) as an
-- ordinary index scan, in exactly the order of a sequential scan; inserts are
-- found by the next query, VACUUM merges and removes dead rows, and every
-- change is WAL-logged (crash recovery, replicas).
create or replace function @extschema@.sparse_inverted_handler(internal)
returns index_am_handler
as '$libdir/hybrid_search', 'sparse_inverted_handler'
language c strict
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_inverted_handler(internal) is
'handler of the sparse_inverted index access method';

-- CREATE ACCESS METHOD and CREATE OPERATOR CLASS have no IF NOT EXISTS, and
-- this script is re-run by upgrades.
do $block$
begin
    if not exists (select from pg_catalog.pg_am where amname = 'sparse_inverted') then
        create access method sparse_inverted type index
        handler @extschema@.sparse_inverted_handler;
        comment on access method sparse_inverted is
        'exact inverted index over sparsevec for ORDER BY <#> (hybrid_search)';
    end if;
    if not exists (
        select from pg_catalog.pg_opclass as c
        inner join pg_catalog.pg_am as a on c.opcmethod = a.oid
        where a.amname = 'sparse_inverted' and c.opcname = 'sparsevec_ip_ops'
    ) then
        create operator class @extschema@.sparsevec_ip_ops
        default for type @extschema:vector@.sparsevec using sparse_inverted as
        operator 1 @extschema:vector@.<#> (
            @extschema:vector@.sparsevec, @extschema:vector@.sparsevec
        ) for order by pg_catalog.float_ops;
    end if;
end;
$block$;

-------------------------------------------------------------------------------
-- _create_filter_operator_classes
-- Filter columns: a sparse_inverted (or dense_flat) index ranks its first
-- column; later columns store nothing and take these operator classes, so
-- that the planner hands the scan a condition on them (a WHERE clause, a
-- row-level-security policy). The scan finds the rows that may match in
-- another index of the table over the same column or expression (a GIN index
-- for jsonb @>, a btree for =) and ranks only those; the executor rechecks
-- the condition (extension/sparse_filter.c). CREATE OPERATOR CLASS has no IF
-- NOT EXISTS, and this script is re-run by upgrades.
create or replace function @extschema@._create_filter_operator_classes(access_method name)
returns void
as $func$
declare
    filter_class record;
begin
    for filter_class in
        select c.name, c.type, c.operator
        from (
            values
            ('jsonb_filter_ops', 'jsonb', '@>'),
            ('int4_filter_ops', 'integer', '='),
            ('int8_filter_ops', 'bigint', '='),
            ('text_filter_ops', 'text', '=')
        ) as c (name, type, operator)
    loop
        if not exists (
            select from pg_catalog.pg_opclass as c
            inner join pg_catalog.pg_am as a on c.opcmethod = a.oid
            where a.amname = access_method and c.opcname = filter_class.name
        ) then
            execute pg_catalog.format(
                'create operator class @extschema@.%1$I default for type %2$s using %4$I as '
                'operator 1 pg_catalog.%3$s (%2$s, %2$s)',
                filter_class.name, filter_class.type, filter_class.operator, access_method
            );
        end if;
    end loop;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@._create_filter_operator_classes(name) is
'creates the filter operator classes (jsonb @>, integer, bigint and text =) of an index access method';

select @extschema@._create_filter_operator_classes('sparse_inverted');

-------------------------------------------------------------------------------
-- sparse_inverted_check
-- amcheck for a sparse_inverted index: its structure, then every row the
-- caller's snapshot sees indexed with exactly its weights, and every other
-- indexed row a dead or uncommitted one. Blocks VACUUM of the table while it
-- runs, not writes.
create or replace function @extschema@.sparse_inverted_check(index regclass)
returns jsonb
as '$libdir/hybrid_search', 'sparse_inverted_check'
language c strict volatile
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_inverted_check(regclass) is
'compare a sparse_inverted index with its table: {"consistent": bool, "problems": [...], counts}';

revoke all on function @extschema@.sparse_inverted_check(regclass) from public;

-------------------------------------------------------------------------------
-- documents_sparse_idx: the sparse leg's index; a metadata @> filter ranks
-- only the rows documents_metadata_idx finds.
create index if not exists documents_sparse_idx on @extschema@.documents
using sparse_inverted (sparse @extschema@.sparsevec_ip_ops, metadata @extschema@.jsonb_filter_ops);
