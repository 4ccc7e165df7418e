-------------------------------------------------------------------------------
-- _role_functions
-- Which functions each access level may execute, by name (all overloads).
-- 'search' covers the search legs, embedding and the helpers they call with
-- the caller's rights; 'write' adds none: the triggers that embed, queue and
-- copy enabled tables run as the owner (trigger functions need no EXECUTE
-- right). Everything else (configuration, model path, index rebuilds,
-- re-embedding, the queue, checks, grants) is for the extension owner only.
-- 099_privileges.sql revokes EXECUTE on every function from PUBLIC, so these
-- lists are the whole truth.
create or replace function @extschema@._role_functions(access text)
returns name[]
as $func$
    select case access
        when 'search' then array[
            'hybrid_search', 'dense_search', 'sparse_search', 'sparse_search_scan',
            'keyword_search', 'embed_dense', 'embed_sparse', 'embed', 'embed_batch',
            'sparse_dot', 'sparse_to_jsonb', 'sparse_entries', 'query_tokens', 'sparse_explain',
            'hybrid_search_model_info', 'hybrid_search_model_stats', 'hybrid_search_load_python',
            '_check_search_arguments', '_check_filter', '_check_query_text', '_check_query_vector',
            '_dense_index_halfvec_dimensions', '_dense_index_is_graph',
            'keyword_search_scan', '_check_query_model', '_source_filter',
            'hybrid_search_evaluate', 'hybrid_search_score_run', '_check_table_columns',
            'colbert_rerank', '_colbert_query', '_colbert_check_encoders', '_query_cache_prune',
            '_query_cache_put', '_query_cache_count', 'to_bm25query', '_bm25query', 'bm25_distance',
            '_bm25query_statistics', '_keyword_bm25query', '_bm25query_rows', 'bm25query_out', '_bm25query_shared',
            '_bm25_visible_statistics', '_bm25_policy_index', '_bm25query_policy_rows',
            '_hybrid_search', '_hybrid_search_plan', '_hybrid_search_fuse', '_hybrid_search_rerank',
            '_keyword_search_bm25query', '_search_settings_push', '_search_settings_pop',
            '_is_coordinator', '_coordinator_legs', '_coordinator_documents', '_coordinator_fanout',
            '_shard_bm25_statistics', '_shard_legs', '_shard_documents'
        ]::name[]
        when 'write' then array[]::name[]
    end;
$func$
language sql immutable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _sparse_index_relations
-- The relations derived from documents.sparse (the token statistics). They
-- hold every row's terms and weights, so row-level security on documents
-- does not protect them.
create or replace function @extschema@._sparse_index_relations()
returns regclass[]
as $func$
    select array[
        '@extschema@.hybrid_search_token_stats'::regclass
    ];
$func$
language sql stable parallel safe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- _revoke_relations
-- The REVOKEs of every right a role can hold on our tables and sequence,
-- which both hybrid_search_grant (before it grants) and hybrid_search_revoke
-- run.
create or replace function @extschema@._revoke_relations(role_name name)
returns setof text
as $func$
    select pg_catalog.format('revoke all on table %s from %I', r.rel, role_name)
    from pg_catalog.unnest(
        array[
            '@extschema@.documents'::regclass, '@extschema@.hybrid_search_queue'::regclass,
            '@extschema@.hybrid_search_errors'::regclass
        ] || @extschema@._sparse_index_relations()
    ) as r (rel)
    union all
    select pg_catalog.format(
        'revoke all on sequence %s from %I', '@extschema@.documents_id_seq'::regclass, role_name
    );
$func$
language sql volatile parallel unsafe security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- hybrid_search_grant
-- Gives a role exactly what it needs to search ('search') or to search and
-- write documents ('write'), and takes back anything else it held on our
-- objects, so granting again after an upgrade or a change of level leaves
-- the level's privileges and nothing more (docs/security.md: "Privilege
-- map"). No right on hybrid_search_config, the queue, the errors or the
-- sequence; a writer may set documents.content and metadata only (the
-- vectors, fts, model, embedded_at, source and source_key are the system's,
-- written by triggers that run as the owner). If documents has row-level
-- security that applies to the role, hybrid_search_token_stats is not
-- granted, and revoked if it was (it would show every tenant's token
-- weights); the legs read documents under the role's policies through their
-- index scans, row by row.
-- Only the owner of the objects (or a superuser) can grant, as with GRANT
-- itself.
create or replace function @extschema@.hybrid_search_grant(role regrole, access text default 'search')
returns setof text
as $func$
declare
    role_name name := (select r.rolname from pg_catalog.pg_roles as r where r.oid = role);
    rls_applies boolean;
    stmt text;
begin
    if role is null or access is null or access not in ('search', 'write') then
        raise exception 'hybrid_search_grant: expected a role and ''search'' or ''write'', got % and %',
            coalesce(role::text, 'NULL'), coalesce(pg_catalog.quote_literal(access), 'NULL')
        using errcode = 'invalid_parameter_value';
    end if;
    select
        c.relrowsecurity
        and not r.rolbypassrls
        and not r.rolsuper
        and not pg_catalog.pg_has_role(role, c.relowner, 'USAGE')
    into rls_applies
    from pg_catalog.pg_class as c, pg_catalog.pg_roles as r
    where c.oid = '@extschema@.documents'::regclass and r.oid = role;

    for stmt in
        -- first take back whatever the role holds on our tables, sequence and
        -- functions beyond this level (earlier versions gave writers the
        -- queue, the errors, the sequence and every column of documents)
        select r.stmt from @extschema@._revoke_relations(role_name) as r (stmt)
        union all
        select pg_catalog.format('revoke execute on function %s from %I', p.oid::regprocedure, role_name)
        from pg_catalog.pg_proc as p
        where
            p.pronamespace = '@extschema@'::regnamespace
            and not (
                p.proname = any(@extschema@._role_functions('search'))
                or (access = 'write' and p.proname = any(@extschema@._role_functions('write')))
            )
            and exists (
                select from pg_catalog.aclexplode(p.proacl) as a
                where a.grantee = role and a.privilege_type = 'EXECUTE'
            )
        union all
        select pg_catalog.format('grant usage on schema %I to %I', n.nspname, role_name)
        from pg_catalog.pg_namespace as n
        where n.oid in (
            select e.extnamespace from pg_catalog.pg_extension as e
            where e.extname in ('hybrid_search', 'vector')
        )
        union all
        select pg_catalog.format('grant execute on function %s to %I', p.oid::regprocedure, role_name)
        from pg_catalog.pg_proc as p
        where
            p.pronamespace = '@extschema@'::regnamespace
            and (
                p.proname = any(@extschema@._role_functions('search'))
                or (access = 'write' and p.proname = any(@extschema@._role_functions('write')))
            )
        union all
        select pg_catalog.format('grant select on table %s to %I', '@extschema@.documents'::regclass, role_name)
        union all
        select pg_catalog.format('grant select on table %s to %I', r.rel, role_name)
        from pg_catalog.unnest(@extschema@._sparse_index_relations()) as r (rel)
        where not rls_applies
        union all
        -- the writer's columns; the triggers fill the rest as the owner
        select pg_catalog.format(
            'grant insert (content, metadata), update (content, metadata), delete on table %s to %I',
            '@extschema@.documents'::regclass, role_name
        )
        where access = 'write'
    loop
        execute stmt;
        return next stmt;
    end loop;
    if rls_applies then
        raise notice 'hybrid_search_grant: row-level security on documents applies to %: hybrid_search_token_stats is not granted, searches read documents under its policies',
            role_name;
    end if;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_grant is
'give a role exactly what searching (''search'') or writing documents (''write'') needs; returns the statements';

-------------------------------------------------------------------------------
-- hybrid_search_revoke
-- Takes back everything hybrid_search_grant can give, whatever the level.
create or replace function @extschema@.hybrid_search_revoke(role regrole)
returns setof text
as $func$
declare
    role_name name := (select r.rolname from pg_catalog.pg_roles as r where r.oid = role);
    stmt text;
begin
    if role is null then
        raise exception 'hybrid_search_revoke: role must not be NULL'
        using errcode = 'invalid_parameter_value';
    end if;
    for stmt in
        select pg_catalog.format('revoke execute on function %s from %I', p.oid::regprocedure, role_name)
        from pg_catalog.pg_proc as p
        where
            p.pronamespace = '@extschema@'::regnamespace
            and (
                p.proname = any(
                    @extschema@._role_functions('search') || @extschema@._role_functions('write')
                )
                or exists (
                    select from pg_catalog.aclexplode(p.proacl) as a
                    where a.grantee = role and a.privilege_type = 'EXECUTE'
                )
            )
        union all
        select r.stmt from @extschema@._revoke_relations(role_name) as r (stmt)
    loop
        execute stmt;
        return next stmt;
    end loop;
end;
$func$
language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_revoke is
'revoke everything hybrid_search_grant gives (schema usage is left alone); returns the REVOKEs run';
