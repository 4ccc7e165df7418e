-------------------------------------------------------------------------------
-- _embed_for_storage
-- What the write path stores for many texts: embed_batch's (ord, dense,
-- sparse) plus BGE-M3's ColBERT vectors (float16 bytes, see documents.colbert)
-- when hybrid_search_settings.colbert_store is on; NULL otherwise, and then
-- they are not computed at all.
create or replace function @extschema@._embed_for_storage(contents text[])
returns table (
    ord integer,
    dense @extschema:vector@.vector,
    sparse @extschema:vector@.sparsevec,
    colbert bytea
)
as $python$
    #LOAD-HYBRID-SEARCH
    from hybrid_search import sql_api
    return sql_api.embed_for_storage(plpy, contents)
$python$
language plpython3u stable strict parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _embed_and_store
-- One model call for these documents' contents, stored into the rows that
-- still hold exactly that content (a row rewritten meanwhile is left for
-- whoever wrote it), with fts where the insert left it NULL. Returns the ids
-- it stored.
create or replace function @extschema@._embed_and_store(ids bigint[], contents text[])
returns bigint[]
as $func$
    with stored as (
        update @extschema@.documents as d
        set
            dense = e.dense,
            sparse = e.sparse,
            colbert = e.colbert,
            model = s.embedding_model,
            embedded_at = pg_catalog.now(),
            -- NULL when _documents_fulltext left it to this UPDATE
            fts = coalesce(d.fts, pg_catalog.to_tsvector(s.text_search_config, d.content))
        from unnest(ids, contents) with ordinality as b (id, content, ord)
        inner join @extschema@._embed_for_storage(contents) as e on b.ord = e.ord
        cross join @extschema@.hybrid_search_settings as s
        where d.id = b.id and d.content = b.content
        returning d.id
    )
    select coalesce(array_agg(stored.id), '{}') from stored;
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_embed_documents
-- Embeds the given documents now, in batches of
-- hybrid_search_settings.batch_size: one model call and one UPDATE per batch.
-- Returns the number of rows written.
create or replace function @extschema@.hybrid_search_embed_documents(ids bigint[])
returns bigint
as $func$
declare
    batch_ids bigint[];
    batch_contents text[];
    written bigint := 0;
begin
    if ids is null or cardinality(ids) = 0 then
        return 0;
    end if;
    for batch_ids, batch_contents in
        select array_agg(b.id order by b.id), array_agg(b.content order by b.id)
        from (
            select
                d.id,
                d.content,
                (row_number() over (order by d.id) - 1) / s.batch_size as batch
            from @extschema@.documents as d
            cross join @extschema@.hybrid_search_settings as s
            where d.id = any(ids)
        ) as b
        group by b.batch
        order by b.batch
    loop
        written := written + cardinality(@extschema@._embed_and_store(batch_ids, batch_contents));
    end loop;
    return written;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_embed_documents is
'embed (or re-embed) these documents now, one model call per batch_size rows';

-------------------------------------------------------------------------------
-- _embeds_now
-- Whether the write triggers embed a row of this source in the writing
-- transaction ('sync') rather than queue it: the source table's mode
-- (hybrid_search_enable), else hybrid_search_settings.embed_mode, unless the
-- session set hybrid_search.queue_writes.
create or replace function @extschema@._embeds_now(source text)
returns boolean
as $func$
    select
        coalesce(pg_catalog.current_setting('hybrid_search.queue_writes', true), '') <> 'on'
        and coalesce(
            (select src.embed_mode from @extschema@.hybrid_search_sources as src where src.source = $1),
            (select s.embed_mode from @extschema@.hybrid_search_settings as s)
        ) = 'sync';
$func$
language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _embed_on_write
-- What the write triggers do with documents that need vectors: embed them in
-- this transaction ('sync') or queue them for hybrid_search_worker
-- ('queued'). The mode is the document's source table's (hybrid_search_enable),
-- else hybrid_search_settings.embed_mode; hybrid_search_enable queues a
-- table's existing rows whatever the mode.
create or replace function @extschema@._embed_on_write(ids bigint[])
returns void
as $func$
declare
    queued bigint[];
    now_ids bigint[];
begin
    if cardinality(ids) = 0 then
        return;
    end if;
    select
        array_agg(d.id) filter (where not m.now),
        array_agg(d.id) filter (where m.now)
    into queued, now_ids
    from @extschema@.documents as d
    cross join lateral (select @extschema@._embeds_now(d.source) as now) as m
    where d.id = any(ids);
    perform @extschema@.hybrid_search_enqueue(queued);
    perform @extschema@.hybrid_search_embed_documents(now_ids);
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _documents_fulltext
-- Row-level trigger: fts follows content (and hybrid_search_configure
-- rewrites it when the text search configuration changes). A row this
-- statement embeds (inserted without vectors, or given a new content) gets
-- fts from the embedding UPDATE instead (_embed_and_store): one row version
-- with fts, not two. Runs
-- as the owner, as the embedding triggers do: whether this statement embeds
-- (_embeds_now) is theirs to know, not the writer's. Stored ColBERT
-- vectors of the old content are dropped unless the same UPDATE sets new ones
-- (the embedding triggers store them again where colbert_store is on).
-- A tsvector holds at most 1 MB of lexemes and positions, whatever
-- max_content_chars allows: a content that makes a bigger one is refused with an
-- error naming both limits. Only a content of more than 128 kB (1 MB / 8) is
-- checked: a tsvector took at most 3.4 bytes per byte of text in every text
-- tried, and only those pay for the subtransaction that catches the error.
create or replace function @extschema@._documents_fulltext()
returns trigger
as $func$
declare
    config regconfig := (select s.text_search_config from @extschema@.hybrid_search_settings as s);
    small boolean := coalesce(pg_catalog.octet_length(new.content), 0) <= 131072;
begin
    -- rows the statement triggers below embed: inserted without both vectors,
    -- or updated to a new content with the vectors left as they were
    if (
        case tg_op
            when 'INSERT' then new.dense is null or new.sparse is null
            else
                new.content is distinct from old.content
                and @extschema:vector@.vector_send(new.dense)
                is not distinct from @extschema:vector@.vector_send(old.dense)
                and @extschema:vector@.sparsevec_send(new.sparse)
                is not distinct from @extschema:vector@.sparsevec_send(old.sparse)
        end
    )
        and small
        and @extschema@._embeds_now(new.source) then
        -- the statement's embedding UPDATE writes fts with the vectors, so this
        -- row version, dead at once, adds nothing to the BM25 index's statistics
        new.fts := null;
    elsif small then
        new.fts := pg_catalog.to_tsvector(config, new.content);
    else
        begin
            new.fts := pg_catalog.to_tsvector(config, new.content);
        exception when program_limit_exceeded then
            raise exception 'hybrid_search: a document of % characters makes a full-text vector (fts) over PostgreSQL''s 1 MB tsvector limit',
                pg_catalog.length(new.content)
            using
                errcode = 'program_limit_exceeded',
                detail = pg_catalog.format(
                    '%s; max_content_chars (%s) bounds what the model reads, not the tsvector',
                    sqlerrm, (select s.max_content_chars from @extschema@.hybrid_search_settings as s)
                ),
                hint = 'split the document into smaller ones';
        end;
    end if;
    if tg_op = 'UPDATE' and new.colbert is not null and new.content is distinct from old.content
        and new.colbert = old.colbert then
        new.colbert := null;
    end if;
    return new;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_fulltext
before insert or update of content on @extschema@.documents
for each row execute function @extschema@._documents_fulltext();

-------------------------------------------------------------------------------
-- _documents_embed_inserted
-- Statement-level trigger: every inserted (or COPYed) row, in batches. Rows
-- that arrive with both vectors (clients that embed elsewhere: only roles
-- that may write the vector columns) are kept as they are. This and
-- _documents_embed_updated run as the owner (SECURITY DEFINER, search_path
-- pinned): writers may set only content and metadata, may not touch the
-- queue, and the vectors are stored or queued for exactly the rows the
-- statement wrote (the transition table), never for ids a caller names.
create or replace function @extschema@._documents_embed_inserted()
returns trigger
as $func$
begin
    perform @extschema@._embed_on_write(array(
        select n.id from new_rows as n where n.dense is null or n.sparse is null
    ));
    return null;
end;
$func$
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _documents_embed_updated
-- Statement-level trigger: only rows whose content changed and whose vectors
-- the same UPDATE did not set. Metadata-only updates, and the UPDATE that
-- stores embeddings, find nothing to do. Runs as the owner (see above).
create or replace function @extschema@._documents_embed_updated()
returns trigger
as $func$
begin
    perform @extschema@._embed_on_write(array(
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
language plpgsql volatile security definer
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_embed_inserted
after insert on @extschema@.documents
referencing new table as new_rows
for each statement execute function @extschema@._documents_embed_inserted();

create or replace trigger documents_embed_updated
after update on @extschema@.documents
referencing old table as old_rows new table as new_rows
for each statement execute function @extschema@._documents_embed_updated();

-------------------------------------------------------------------------------
-- hybrid_search_reembed
-- Re-embeds every document, for example after changing max_length or model
-- settings.
create or replace function @extschema@.hybrid_search_reembed()
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
