-------------------------------------------------------------------------------
-- hybrid_search_queue_status
-- The embedding queue at a glance, for psql and monitoring: what is waiting,
-- how old the oldest entry is, what failed, and what the workers did in the
-- last minutes.
create or replace view @extschema@.hybrid_search_queue_status as
with queue as (
    select
        count(*) as queued,
        count(*) filter (where qu.not_before <= pg_catalog.now()) as ready,
        count(*) filter (where qu.attempts > 0) as retrying,
        pg_catalog.now() - min(qu.queued_at) as oldest_pending_age
    from @extschema@.hybrid_search_queue as qu
),

errors as (
    select count(*) as errors from @extschema@.hybrid_search_errors
),

recent as (
    select
        coalesce(sum(wl.embedded) filter (
            where wl.finished_at > pg_catalog.now() - interval '1 minute'
        ), 0) as embedded_last_minute,
        coalesce(sum(wl.embedded) filter (
            where wl.finished_at > pg_catalog.now() - interval '5 minutes'
        ), 0) as embedded_last_5_minutes,
        coalesce(sum(wl.embedded), 0) as embedded_last_15_minutes,
        count(distinct wl.worker_pid) filter (
            where wl.finished_at > pg_catalog.now() - interval '1 minute'
        ) as workers_last_minute
    from @extschema@.hybrid_search_worker_log as wl
    where wl.finished_at > pg_catalog.now() - interval '15 minutes'
)

select
    queue.queued,
    queue.ready,
    queue.retrying,
    queue.oldest_pending_age,
    errors.errors,
    recent.embedded_last_minute,
    recent.embedded_last_5_minutes,
    recent.embedded_last_15_minutes,
    recent.workers_last_minute,
    round(recent.embedded_last_5_minutes / 300.0, 1) as rows_per_second_5_minutes
from queue, errors, recent;

comment on view @extschema@.hybrid_search_queue_status is
'embedding queue: queued, ready, retrying, oldest pending age, errors, rows embedded recently, workers';
