-------------------------------------------------------------------------------
-- _dense_index_halfvec_dimensions
-- The dimensions of the halfvec expression in documents_dense_idx (the type
-- modifier of the index's column), or NULL when the dense index (if any) is
-- on the vector column itself. Every dense search asks: plpgsql keeps the
-- plan (a sql function with a SET clause is planned at every call), and the
-- catalog lookup is by pg_attribute's key (deparsing the index definition
-- cost 6x more).
create or replace function @extschema@._dense_index_halfvec_dimensions()
returns integer
as $func$
begin
    return (
        select a.atttypmod
        from pg_catalog.pg_attribute as a
        where
            a.attrelid = pg_catalog.to_regclass('@extschema@.documents_dense_idx')
            and a.attnum = 1
            and a.atttypid = '@extschema:vector@.halfvec'::pg_catalog.regtype
    );
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;
