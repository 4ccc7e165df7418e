-------------------------------------------------------------------------------
-- hybrid_search_embed_documents
-- Embeds the given documents in batches of hybrid_search_settings.batch_size:
-- one model call and one UPDATE per batch. Returns the number of rows written.
create function @extschema@.hybrid_search_embed_documents(ids bigint[])
returns bigint
as $func$
declare
    s @extschema@.hybrid_search_settings;
    batch_ids bigint[];
    batch_contents text[];
    written bigint := 0;
begin
    if ids is null or cardinality(ids) = 0 then
        return 0;
    end if;
    select * into s from @extschema@.hybrid_search_settings;
    for batch_ids, batch_contents in
        select array_agg(b.id order by b.id), array_agg(b.content order by b.id)
        from (
            select
                d.id,
                d.content,
                (row_number() over (order by d.id) - 1) / s.batch_size as batch
            from @extschema@.documents as d
            where d.id = any(ids)
        ) as b
        group by b.batch
        order by b.batch
    loop
        update @extschema@.documents as d
        set
            dense = e.dense,
            sparse = e.sparse,
            model = s.embedding_model,
            embedded_at = pg_catalog.now()
        from pg_catalog.unnest(batch_ids) with ordinality as b (id, ord)
        inner join @extschema@.embed_batch(batch_contents) as e on b.ord = e.ord
        where d.id = b.id;
        written := written + cardinality(batch_ids);
    end loop;
    return written;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_embed_documents is
'embed (or re-embed) these documents now, one model call per batch_size rows';

-------------------------------------------------------------------------------
-- _documents_fulltext
-- Row-level trigger: fts follows content (and hybrid_search_configure
-- rewrites it when the text search configuration changes).
create function @extschema@._documents_fulltext()
returns trigger
as $func$
begin
    new.fts := pg_catalog.to_tsvector(
        (select s.text_search_config from @extschema@.hybrid_search_settings as s), new.content
    );
    return new;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create trigger documents_fulltext
before insert or update of content on @extschema@.documents
for each row execute function @extschema@._documents_fulltext();

-------------------------------------------------------------------------------
-- _documents_embed_inserted
-- Statement-level trigger: every inserted (or COPYed) row, in batches. Rows
-- that arrive with both vectors (clients that embed elsewhere) are kept as
-- they are.
create function @extschema@._documents_embed_inserted()
returns trigger
as $func$
begin
    perform @extschema@.hybrid_search_embed_documents(array(
        select n.id from new_rows as n where n.dense is null or n.sparse is null
    ));
    return null;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _documents_embed_updated
-- Statement-level trigger: only rows whose content changed and whose vectors
-- the same UPDATE did not set. Metadata-only updates, and the UPDATE that
-- stores embeddings, find nothing to do.
create function @extschema@._documents_embed_updated()
returns trigger
as $func$
begin
    perform @extschema@.hybrid_search_embed_documents(array(
        select n.id
        from new_rows as n
        left join old_rows as o on n.id = o.id
        where
            o.id is null
            or (
                n.content is distinct from o.content
                -- compared as bytes: pgvector's = is not on our search_path
                and @extschema:vector@.vector_send(n.dense)
                is not distinct from @extschema:vector@.vector_send(o.dense)
                and @extschema:vector@.sparsevec_send(n.sparse)
                is not distinct from @extschema:vector@.sparsevec_send(o.sparse)
            )
    ));
    return null;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create trigger documents_embed_inserted
after insert on @extschema@.documents
referencing new table as new_rows
for each statement execute function @extschema@._documents_embed_inserted();

create trigger documents_embed_updated
after update on @extschema@.documents
referencing old table as old_rows new table as new_rows
for each statement execute function @extschema@._documents_embed_updated();

-------------------------------------------------------------------------------
-- hybrid_search_reembed
-- Re-embeds every document, for example after changing max_length or model
-- settings.
create function @extschema@.hybrid_search_reembed()
returns bigint
as $func$
    select @extschema@.hybrid_search_embed_documents(
        array(select d.id from @extschema@.documents as d)
    );
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_reembed is
're-embed all documents with the current settings; returns the number of rows';
