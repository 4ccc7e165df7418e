-------------------------------------------------------------------------------
-- sparse_entries
-- The (token id, weight) pairs of a sparsevec; token id = sparsevec index - 1.
create or replace function @extschema@.sparse_entries(sparse @extschema:vector@.sparsevec)
returns table (token_id integer, weight real)
as $func$
    select
        pg_catalog.split_part(entry, ':', 1)::integer - 1,
        pg_catalog.split_part(entry, ':', 2)::real
    from pg_catalog.unnest(pg_catalog.string_to_array(
        pg_catalog.btrim(pg_catalog.split_part(sparse::text, '/', 1), '{}'), ','
    )) as entry
    where entry <> '';
$func$
language sql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp
-- sparsevec's text form follows extra_float_digits: 1 writes every weight exactly
set extra_float_digits to 1;

comment on function @extschema@.sparse_entries is
'token ids (sparsevec index - 1) and weights of a sparse embedding';

-------------------------------------------------------------------------------
-- sparse_to_jsonb
-- A sparsevec as {"token_id": weight}, the lexical-weights format of
-- FlagEmbedding and of most other tools.
create or replace function @extschema@.sparse_to_jsonb(sparse @extschema:vector@.sparsevec)
returns jsonb
as $func$
    select coalesce(pg_catalog.jsonb_object_agg(e.token_id::text, e.weight), '{}'::jsonb)
    from @extschema@.sparse_entries(sparse) as e;
$func$
language sql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp
-- jsonb writes a real as float4out does: the caller's extra_float_digits would
-- round the weights (and make this IMMUTABLE function's result depend on it)
set extra_float_digits to 1;

comment on function @extschema@.sparse_to_jsonb is
'sparse embedding as a {"token_id": weight} object';

-------------------------------------------------------------------------------
-- sparse_dot (sparsevec)
-- Lexical matching score of two sparse embeddings: the sum over shared tokens
-- of the product of weights (FlagEmbedding's compute_lexical_matching_score).
create or replace function @extschema@.sparse_dot(
    a @extschema:vector@.sparsevec, b @extschema:vector@.sparsevec
)
returns double precision
as $func$
    select @extschema:vector@.inner_product(a, b);
$func$
language sql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_dot(
    @extschema:vector@.sparsevec, @extschema:vector@.sparsevec
) is
'lexical matching score: sum of weight products over shared tokens';

-------------------------------------------------------------------------------
-- sparse_dot (jsonb)
-- The same score for {"token_id": weight} objects; keys are matched as text.
-- Anything but an object of numbers is an error, never a silent 0.
create or replace function @extschema@.sparse_dot(a jsonb, b jsonb)
returns double precision
as $func$
declare
    bad text;
begin
    if pg_catalog.jsonb_typeof(a) <> 'object' or pg_catalog.jsonb_typeof(b) <> 'object' then
        raise exception 'sparse_dot: expected two JSON objects like {"17": 0.25}, got % and %',
            pg_catalog.jsonb_typeof(a), pg_catalog.jsonb_typeof(b)
        using errcode = 'invalid_parameter_value';
    end if;
    select x.key into bad
    from (
        select e.key, e.value from pg_catalog.jsonb_each(a) as e
        union all
        select e.key, e.value from pg_catalog.jsonb_each(b) as e
    ) as x
    where pg_catalog.jsonb_typeof(x.value) <> 'number'
    limit 1;
    if found then
        raise exception 'sparse_dot: the weight of token "%" is not a number', bad
        using errcode = 'invalid_parameter_value';
    end if;
    return coalesce((
        select sum(x.value::double precision * y.value::double precision)
        from pg_catalog.jsonb_each(a) as x
        inner join pg_catalog.jsonb_each(b) as y on x.key = y.key
    ), 0);
end;
$func$
language plpgsql immutable strict parallel safe security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.sparse_dot(jsonb, jsonb) is
'lexical matching score of two {"token_id": weight} objects';
