-------------------------------------------------------------------------------
-- documents_model_idx
-- documents.model names the encoders that made a row's vectors; the index
-- lets a search check in two index probes that no row came from others.
create index if not exists documents_model_idx on @extschema@.documents (model);

-------------------------------------------------------------------------------
-- _check_query_model
-- A query embedded by other models than the rows would compare vectors of
-- different spaces: refuse it. Rows are made consistent again by
-- hybrid_search_set_model(..., reembed => true).
create or replace function @extschema@._check_query_model(caller text)
returns void
as $func$
declare
    current text := (select s.embedding_model from @extschema@.hybrid_search_settings as s);
    other text;
begin
    select d.model into other from @extschema@.documents as d where d.model < current limit 1;
    if other is null then
        select d.model into other from @extschema@.documents as d where d.model > current limit 1;
    end if;
    if other is not null then
        raise exception '%: documents were embedded by %, but queries are embedded by %',
            caller, other, current
        using
            errcode = 'object_not_in_prerequisite_state',
            hint = 'SELECT hybrid_search_set_model(...) with the models the rows were made by,'
            ' or re-embed them with reembed => true';
    end if;
end;
$func$
language plpgsql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;
