-------------------------------------------------------------------------------
-- _queue_failed
-- Record a failed attempt: retry after queue_retry_seconds, doubling each
-- time (at most an hour), or after queue_max_attempts move the document to
-- hybrid_search_errors. Returns true when it gave up.
create or replace function @extschema@._queue_failed(failed_id bigint, message text)
returns boolean
as $func$
declare
    s @extschema@.hybrid_search_settings;
    tries integer;
begin
    select * into s from @extschema@.hybrid_search_settings;
    update @extschema@.hybrid_search_queue as q
    set
        attempts = q.attempts + 1,
        last_error = message,
        not_before = pg_catalog.clock_timestamp()
        + pg_catalog.make_interval(
            secs => least(3600, s.queue_retry_seconds * power(2, least(q.attempts, 20)))
        )
    where q.doc_id = failed_id
    returning q.attempts into tries;
    if tries < s.queue_max_attempts then
        return false;
    end if;
    delete from @extschema@.hybrid_search_queue as q where q.doc_id = failed_id;
    insert into @extschema@.hybrid_search_errors as e (doc_id, attempts, error)
    values (failed_id, tries, message)
    on conflict (doc_id) do update
        set failed_at = excluded.failed_at, attempts = excluded.attempts, error = excluded.error;
    return true;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_process_queue
-- One batch, in the caller's transaction: lock up to batch_size ready queue
-- entries (skipping those other workers hold), embed the documents' current
-- content in one model call, store the vectors and delete the entries. If
-- the batch fails, its documents are embedded one by one so that a bad
-- document fails alone. An entry whose document was rewritten meanwhile
-- stays queued for the newest content; one whose document is gone is
-- dropped.
create or replace function @extschema@.hybrid_search_process_queue(batch_size integer default null)
returns table (taken integer, embedded integer, retried integer, failed integer)
as $func$
#variable_conflict use_column
declare
    started timestamptz := pg_catalog.clock_timestamp();
    ids bigint[];
    contents text[];
    stored bigint[] := '{}';
    message text;
    n_retried integer := 0;
    n_failed integer := 0;
    n_taken integer;
begin
    if batch_size is not null and (batch_size < 1 or batch_size > 4096) then
        raise exception 'hybrid_search_process_queue: batch_size must be between 1 and 4096, got %',
            batch_size
        using errcode = 'invalid_parameter_value';
    end if;
    select array_agg(r.doc_id order by r.doc_id) into ids
    from (
        select q.doc_id
        from @extschema@.hybrid_search_queue as q
        where q.not_before <= pg_catalog.clock_timestamp()
        order by q.not_before, q.doc_id
        limit coalesce(batch_size, (select s.batch_size from @extschema@.hybrid_search_settings as s))
        for update skip locked
    ) as r;
    if ids is null then
        return query select 0, 0, 0, 0;
        return;
    end if;
    n_taken := cardinality(ids);
    delete from @extschema@.hybrid_search_queue as q
    where
        q.doc_id = any(ids)
        and not exists (select from @extschema@.documents as d where d.id = q.doc_id);
    select array_agg(d.id order by d.id), array_agg(d.content order by d.id)
    into ids, contents
    from @extschema@.documents as d
    where d.id = any(ids);
    if ids is not null then
        begin
            stored := @extschema@._embed_and_store(ids, contents);
        exception when others then
            for i in 1 .. cardinality(ids) loop
                begin
                    stored := stored || @extschema@._embed_and_store(array[ids[i]], array[contents[i]]);
                exception when others then
                    get stacked diagnostics message = message_text;
                    if @extschema@._queue_failed(ids[i], message) then
                        n_failed := n_failed + 1;
                    else
                        n_retried := n_retried + 1;
                    end if;
                end;
            end loop;
        end;
        delete from @extschema@.hybrid_search_queue as q where q.doc_id = any(stored);
    end if;
    insert into @extschema@.hybrid_search_worker_log (embedded, retried, failed, seconds)
    values (
        cardinality(stored), n_retried, n_failed,
        extract(epoch from pg_catalog.clock_timestamp() - started)
    );
    return query select n_taken, cardinality(stored), n_retried, n_failed;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_process_queue is
'embed one batch of queued documents in this transaction; returns rows taken, embedded, retried, failed';

-------------------------------------------------------------------------------
-- hybrid_search_worker
-- Drain the queue: one committed transaction per batch, until no entry is
-- ready (or max_batches batches). Run it with CALL outside a transaction
-- block: from psql, pg_cron or `hybrid-search worker`. Any number of workers
-- can run at once; each batch is taken by one of them. No SET search_path
-- here: a procedure with one cannot COMMIT, so every name is qualified.
create or replace procedure @extschema@.hybrid_search_worker(
    max_batches integer default null,
    batch_size integer default null,
    inout embedded bigint default 0,
    inout failed bigint default 0
)
as $func$
declare
    batch record;
    batches integer := 0;
begin
    if max_batches is not null and max_batches < 1 then
        raise exception 'hybrid_search_worker: max_batches must be 1 or more, got %', max_batches
        using errcode = 'invalid_parameter_value';
    end if;
    embedded := 0;
    failed := 0;
    delete from @extschema@.hybrid_search_worker_log as l
    where l.finished_at < pg_catalog.now() - interval '1 day';
    commit;
    loop
        exit when batches >= max_batches;
        select * into batch from @extschema@.hybrid_search_process_queue(batch_size);
        commit;
        exit when batch.taken = 0;
        batches := batches + 1;
        embedded := embedded + batch.embedded;
        failed := failed + batch.failed;
    end loop;
end;
$func$
language plpgsql security invoker;

comment on procedure @extschema@.hybrid_search_worker is
'CALL to embed queued documents, one transaction per batch, until none is ready (or max_batches)';
