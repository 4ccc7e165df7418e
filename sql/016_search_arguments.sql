-------------------------------------------------------------------------------
-- _check_filter
-- A filter is matched with @> against metadata, a JSON object: any other JSON
-- would match rows by containment rules nobody meant.
create or replace function @extschema@._check_filter(caller text, filter jsonb)
returns void
as $func$
begin
    if filter is not null and pg_catalog.jsonb_typeof(filter) <> 'object' then
        raise exception '%: filter must be a JSON object matched with @>, got a JSON %',
            caller, pg_catalog.jsonb_typeof(filter)
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_search_arguments
-- The argument checks every search function shares, so that bad input gets
-- the same clear error everywhere instead of an empty or surprising result.
create or replace function @extschema@._check_search_arguments(
    caller text, k integer, filter jsonb
) returns void
as $func$
begin
    if k is null or k < 1 or k > 10000 then
        raise exception '%: k must be between 1 and 10000, got %', caller, coalesce(k::text, 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    perform @extschema@._check_filter(caller, filter);
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_query_text
-- A search needs something to search for.
create or replace function @extschema@._check_query_text(caller text, query text)
returns void
as $func$
begin
    if query is null or pg_catalog.btrim(query) = '' then
        raise exception '%: query must be a non-empty text', caller
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _check_query_vector
-- The vector overloads need a vector.
create or replace function @extschema@._check_query_vector(caller text, missing boolean)
returns void
as $func$
begin
    if missing then
        raise exception '%: query vector must not be NULL', caller
        using errcode = 'invalid_parameter_value';
    end if;
end;
$func$
language plpgsql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;
