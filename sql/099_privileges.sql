-------------------------------------------------------------------------------
-- privileges
-- Every role may read the settings (embedding runs with the caller's rights
-- and must find the model); only the extension owner may change them. The
-- corpus and its statistics are granted explicitly by the DBA.
revoke all on @extschema@.hybrid_search_config from public;
grant select on @extschema@.hybrid_search_config to public;
grant select on @extschema@.hybrid_search_settings to public;
revoke all on @extschema@.hybrid_search_token_stats from public;
-- writes to documents look up their source table's embed mode
grant select on @extschema@.hybrid_search_sources to public;
-- every search asks whether this database is a coordinator, and of which shards
revoke all on @extschema@.hybrid_search_coordinator, @extschema@.hybrid_search_shards from public;
grant select on @extschema@.hybrid_search_coordinator, @extschema@.hybrid_search_shards to public;
-- the shared query cache: row-level security shows each role its own rows only
revoke all on @extschema@.hybrid_search_query_cache from public;
grant select, insert on @extschema@.hybrid_search_query_cache to public;
grant select on @extschema@.hybrid_search_query_cache_stats to public;

-- No function is executable by PUBLIC: hybrid_search_grant() gives a role
-- exactly the functions its access level needs. (Objects created so far in
-- this script are already members of the extension.)
do $block$
declare
    f regprocedure;
begin
    for f in
        select d.objid::regprocedure
        from pg_catalog.pg_depend as d
        inner join pg_catalog.pg_extension as e on d.refobjid = e.oid
        where
            d.classid = 'pg_catalog.pg_proc'::regclass
            and d.refclassid = 'pg_catalog.pg_extension'::regclass
            and d.deptype = 'e'
            and e.extname = 'hybrid_search'
    loop
        execute pg_catalog.format('revoke execute on routine %s from public', f);
    end loop;
end;
$block$;

-- After ALTER EXTENSION UPDATE: a role granted a level by hybrid_search_grant
-- before gets that level as this version defines it (what was added, and
-- nothing it no longer includes). (A fresh install has no such role.) The
-- level is read back from the grants themselves: every level can read
-- documents, and a writer may insert into it. (Roles given single functions
-- by this script, such as pg_monitor, hold no right on documents and are
-- left alone.)
do $block$
declare
    granted record;
begin
    for granted in
        select
            a.grantee::regrole as role,
            case
                when pg_catalog.has_any_column_privilege(
                    a.grantee, '@extschema@.documents'::regclass, 'INSERT'
                ) then 'write'
                else 'search'
            end as access
        from pg_catalog.pg_class as c
        cross join lateral pg_catalog.aclexplode(c.relacl) as a
        where
            c.oid = '@extschema@.documents'::regclass
            and a.privilege_type = 'SELECT'
            and a.grantee <> 0
            and a.grantee <> c.relowner
    loop
        perform @extschema@.hybrid_search_grant(granted.role, granted.access);
    end loop;
end;
$block$;
