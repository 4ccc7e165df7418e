-------------------------------------------------------------------------------
-- hybrid_search_queue
-- Documents waiting to be embedded (embed_mode 'queued', or a backfill). One
-- entry per document: a document rewritten while queued is embedded once,
-- from the content it has when a worker takes it. Kept by pg_dump, so a
-- restore loses no pending work.
create table if not exists @extschema@.hybrid_search_queue (
    doc_id bigint primary key,
    queued_at timestamptz not null default pg_catalog.now(),
    attempts integer not null default 0,
    not_before timestamptz not null default pg_catalog.now(),
    last_error text
);

create index if not exists hybrid_search_queue_ready on @extschema@.hybrid_search_queue (not_before, doc_id);

comment on table @extschema@.hybrid_search_queue is
'documents waiting for hybrid_search_worker (attempts and last_error after failures)';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_queue', '');

-------------------------------------------------------------------------------
-- hybrid_search_errors
-- Queued documents that failed queue_max_attempts times. Nothing is dropped:
-- the document stays in documents (without vectors) and
-- hybrid_search_retry_errors() queues it again.
create table if not exists @extschema@.hybrid_search_errors (
    doc_id bigint primary key,
    failed_at timestamptz not null default pg_catalog.now(),
    attempts integer not null,
    error text not null
);

comment on table @extschema@.hybrid_search_errors is
'queued documents that failed every attempt, with the last error; see hybrid_search_retry_errors()';

select pg_catalog.pg_extension_config_dump('@extschema@.hybrid_search_errors', '');

-------------------------------------------------------------------------------
-- hybrid_search_worker_log
-- One row per batch a worker committed: the source of the throughput view.
-- Rows older than a day are pruned by the workers.
create table if not exists @extschema@.hybrid_search_worker_log (
    finished_at timestamptz not null default pg_catalog.clock_timestamp(),
    worker_pid integer not null default pg_catalog.pg_backend_pid(),
    embedded integer not null,
    retried integer not null,
    failed integer not null,
    seconds double precision not null
);

create index if not exists hybrid_search_worker_log_finished on @extschema@.hybrid_search_worker_log (finished_at);

comment on table @extschema@.hybrid_search_worker_log is
'batches committed by hybrid_search_worker in the last day: rows embedded, retried, failed, seconds';

-------------------------------------------------------------------------------
-- hybrid_search_enqueue
-- Queue documents for embedding; returns how many were newly queued. A
-- document already queued keeps its entry (never waiting for a worker that
-- holds it); one that had failed for good leaves hybrid_search_errors.
-- Workers listening on channel hybrid_search_queue are woken at commit.
create or replace function @extschema@.hybrid_search_enqueue(ids bigint[])
returns bigint
as $func$
declare
    added bigint;
begin
    if ids is null or cardinality(ids) = 0 then
        return 0;
    end if;
    delete from @extschema@.hybrid_search_errors as e where e.doc_id = any(ids);
    insert into @extschema@.hybrid_search_queue (doc_id)
    select distinct i.id from pg_catalog.unnest(ids) as i (id) where i.id is not null
    on conflict (doc_id) do nothing;
    get diagnostics added = row_count;
    if added > 0 then
        perform pg_catalog.pg_notify('hybrid_search_queue', '');
    end if;
    return added;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_enqueue is
'queue these documents for hybrid_search_worker; returns the number newly queued';

-------------------------------------------------------------------------------
-- hybrid_search_backfill
-- Queue every document without vectors (or, with all_documents, every
-- document, e.g. after a settings change). Returns how many were queued.
create or replace function @extschema@.hybrid_search_backfill(all_documents boolean default false)
returns bigint
as $func$
    select @extschema@.hybrid_search_enqueue(array(
        select d.id from @extschema@.documents as d
        where all_documents or d.dense is null or d.sparse is null
        order by d.id
    ));
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_backfill is
'queue documents lacking vectors (all_documents => true: every document); returns the number queued';

-------------------------------------------------------------------------------
-- hybrid_search_retry_errors
-- Give documents that failed for good another full set of attempts.
create or replace function @extschema@.hybrid_search_retry_errors()
returns bigint
as $func$
    select @extschema@.hybrid_search_enqueue(array(
        select e.doc_id from @extschema@.hybrid_search_errors as e order by e.doc_id
    ));
$func$
language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_retry_errors is
'queue every document in hybrid_search_errors again; returns the number queued';

-------------------------------------------------------------------------------
-- _queue_clear
-- Statement trigger: TRUNCATE documents empties the queue and the errors.
create or replace function @extschema@._queue_clear()
returns trigger
as $func$
begin
    truncate @extschema@.hybrid_search_queue, @extschema@.hybrid_search_errors;
    return null;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace trigger documents_queue_clear
after truncate on @extschema@.documents
for each statement execute function @extschema@._queue_clear();
