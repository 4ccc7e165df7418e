-------------------------------------------------------------------------------
-- Fan-out from a coordinator to its shards (014_shards.sql): dblink's
-- asynchronous calls to every shard at once, waited for interruptibly.

-------------------------------------------------------------------------------
-- _shards_disconnect
-- Drops a shard's dblink connection (after an error or a cancel its state is
-- unknown; the next call connects again).
create or replace function @extschema@._shards_disconnect(connection text)
returns void
as $func$
begin
    if connection = any(hybrid_search_remote.dblink_get_connections()) then
        perform hybrid_search_remote.dblink_disconnect(connection);
    end if;
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _shards_send
-- Sends command to a shard without waiting, on this session's connection to
-- it (opened on first use, through the foreign server and the caller's user
-- mapping). A connection the shard dropped since (a restart), or one that
-- still holds an earlier command, is opened again once.
create or replace function @extschema@._shards_send(shard text, command text)
returns void
as $func$
declare
    connection text := 'hybrid_search_shard_' || shard;
begin
    if coalesce(connection = any(hybrid_search_remote.dblink_get_connections()), false) then
        begin
            -- 0 when the connection still holds an earlier command's result (a call
            -- interrupted between reading a shard's answer and draining it)
            if hybrid_search_remote.dblink_send_query(connection, command) = 1 then
                return;
            end if;
        exception when others then
            null;  -- dropped below, as a connection that refused the command
        end;
        perform @extschema@._shards_disconnect(connection);
    end if;
    perform hybrid_search_remote.dblink_connect(connection, shard);
    if hybrid_search_remote.dblink_send_query(connection, command) <> 1 then
        raise exception 'hybrid_search: shard % refused the command: %',
            shard, hybrid_search_remote.dblink_error_message(connection);
    end if;
end;
$func$
language plpgsql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _shards_run
-- Runs command_template (format() with %1$I for the shard's hybrid_search
-- schema; one jsonb column, one row) on every shard in shards at once and
-- returns each shard's value as it arrives. Waiting polls with pg_sleep, so
-- a cancel or statement_timeout interrupts it (dblink_get_result would block
-- uninterruptibly) and is passed on to the shards still working.
-- A shard that cannot be reached, fails, or has not answered within
-- hybrid_search.shard_timeout (a setting, default none) is an error naming
-- it, or with hybrid_search.shards_partial on, a WARNING, and its name in
-- the setting hybrid_search.shards_missing. hybrid_search.shards_queried
-- lists the shards asked.
create or replace function @extschema@._shards_run(caller text, shards text[], command_template text)
returns table (shard text, payload jsonb)
as $func$
#variable_conflict use_column
declare
    partial boolean := coalesce(
        pg_catalog.current_setting('hybrid_search.shards_partial', true), ''
    ) in ('on', 'true', 'yes', '1');
    timeout interval := nullif(
        pg_catalog.current_setting('hybrid_search.shard_timeout', true), ''
    )::interval;
    deadline timestamptz;
    pending text[] := '{}';
    missing text[] := '{}';
    remote record;
    name text;
    connection text;
    answer jsonb;
    failure text;
begin
    deadline := pg_catalog.clock_timestamp() + timeout;
    perform pg_catalog.set_config('hybrid_search.shards_queried', pg_catalog.array_to_string(shards, ','), false);
    perform pg_catalog.set_config('hybrid_search.shards_missing', '', false);
    begin
        for remote in
            select s.name, s.remote_schema from @extschema@.hybrid_search_shards as s
            where s.name = any(shards) order by s.remainder
        loop
            begin
                perform @extschema@._shards_send(
                    remote.name, pg_catalog.format(command_template, remote.remote_schema)
                );
                pending := pending || remote.name;
            exception when others then
                if not partial then
                    raise exception '%: shard % failed: %', caller, remote.name, sqlerrm
                    using errcode = sqlstate,
                    hint = 'SET hybrid_search.shards_partial = on for the other shards'' results';
                end if;
                missing := missing || remote.name;
                raise warning '%: shard % is missing from the results: %', caller, remote.name, sqlerrm;
            end;
        end loop;
        while pg_catalog.cardinality(pending) > 0 loop
            foreach name in array pending loop
                connection := 'hybrid_search_shard_' || name;
                continue when hybrid_search_remote.dblink_is_busy(connection) = 1;
                pending := pg_catalog.array_remove(pending, name);
                -- a remote error (the shard's own cancel or timeout too) is read
                -- here as the connection's message, not raised: an error raised
                -- here would be indistinguishable from this session's own cancel
                select r.payload into answer
                from hybrid_search_remote.dblink_get_result(connection, false) as r (payload jsonb);
                failure := hybrid_search_remote.dblink_error_message(connection);
                -- the empty result that ends the command frees the connection
                perform from hybrid_search_remote.dblink_get_result(connection, false) as r (payload jsonb);
                if failure <> 'OK' or answer is null then
                    perform @extschema@._shards_disconnect(connection);
                    failure := pg_catalog.rtrim(coalesce(nullif(failure, 'OK'), 'no answer'), E'\n');
                    if not partial then
                        raise exception '%: shard % failed: %', caller, name, failure
                        using errcode = 'external_routine_exception',
                        hint = 'SET hybrid_search.shards_partial = on for the other shards'' results';
                    end if;
                    missing := missing || name;
                    raise warning '%: shard % is missing from the results: %', caller, name, failure;
                    continue;
                end if;
                shard := name;
                payload := answer;
                return next;
            end loop;
            if pg_catalog.cardinality(pending) > 0 and pg_catalog.clock_timestamp() > deadline then
                if not partial then
                    raise exception '%: shard % did not answer within hybrid_search.shard_timeout (%)',
                        caller, pending[1], timeout
                    using errcode = 'query_canceled',
                    hint = 'SET hybrid_search.shards_partial = on for the other shards'' results';
                end if;
                foreach name in array pending loop
                    perform hybrid_search_remote.dblink_cancel_query('hybrid_search_shard_' || name);
                    perform @extschema@._shards_disconnect('hybrid_search_shard_' || name);
                    raise warning '%: shard % is missing from the results: no answer within %',
                        caller, name, timeout;
                end loop;
                missing := missing || pending;
                pending := '{}';
            end if;
            if pg_catalog.cardinality(pending) > 0 then
                perform pg_catalog.pg_sleep(0.0002);
            end if;
        end loop;
    exception when others or query_canceled then
        -- a cancel, a timeout or an error: the shards still working stop too
        foreach name in array pending loop
            connection := 'hybrid_search_shard_' || name;
            perform hybrid_search_remote.dblink_cancel_query(connection);
            perform @extschema@._shards_disconnect(connection);
        end loop;
        raise;
    end;
    perform pg_catalog.set_config(
        'hybrid_search.shards_missing', pg_catalog.array_to_string(missing, ','), false
    );
end;
$func$
language plpgsql volatile parallel unsafe security invoker rows 4
set search_path to pg_catalog, pg_temp;
