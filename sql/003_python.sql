-------------------------------------------------------------------------------
-- hybrid_search_load_python
-- Puts the configured virtualenv (hybrid_search_settings.python_venv) at the
-- front of this backend's sys.path and imports our Python module. Every
-- PL/Python function of the extension calls it once per backend, so nothing
-- is installed into the system's site-packages. Refuses in parallel mode before
-- any SQL: PostgreSQL 15's PL/Python cannot start the subtransaction there and
-- its ERROR would corrupt the interpreter (plpython/hybrid_search/parallel.py).
create or replace function @extschema@.hybrid_search_load_python()
returns text
as $python$
    import ctypes, os, sys
    if ctypes.CDLL(None).IsInParallelMode() & 0xFF:  # see plpython/hybrid_search/parallel.py
        plpy.error('hybrid_search: cannot run during a parallel operation', sqlstate='25000')
    venv = plpy.execute('select python_venv from @extschema@.hybrid_search_settings')[0]["python_venv"]
    site = os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    if not os.path.isdir(site):
        plpy.error("hybrid_search: no Python virtualenv at %s (hybrid_search_settings.python_venv)" % venv,
                   hint="run `hybrid-search setup` as root, or hybrid_search_configure(python_venv => ...)")
    if site not in sys.path:
        sys.path.insert(0, site)
    import hybrid_search
    return hybrid_search.__file__
$python$
language plpython3u volatile security invoker
set search_path to pg_catalog, pg_temp;

comment on function @extschema@.hybrid_search_load_python is
'load the hybrid_search Python module from the configured virtualenv (once per backend); returns its path';
