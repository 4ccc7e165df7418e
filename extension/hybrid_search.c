/*
 * hybrid_search.so: imports the model stack (torch, transformers,
 * FlagEmbedding) once, in the postmaster, so that every backend inherits it.
 *
 * Loaded through shared_preload_libraries = 'hybrid_search' with
 * hybrid_search.preload_venv set to the PL/Python virtualenv. The imported
 * modules then live in pages the backends share copy-on-write with the
 * postmaster instead of in ~300 MB of private memory per embedding backend,
 * and a backend's first embedding call skips the seconds the imports take.
 * Without the setting nothing changes: each backend imports what it needs.
 *
 * The postmaster must stay single-threaded (it forks every backend): the
 * Python side keeps libraries from starting thread pools, and startup fails
 * if any thread is left.
 */
#include "postgres.h"

#include <dirent.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "dense_flat.h"
#include "sparse_index.h"

/* as PL/Python does: the Python headers redefine these */
#undef _POSIX_C_SOURCE
#undef _XOPEN_SOURCE
#include <Python.h>

PG_MODULE_MAGIC;

void		_PG_init(void);

static char *preload_venv = NULL;
static bool preloaded = false;

/*
 * The Python code the postmaster runs, with `venv` set. It leaves `error` set
 * to the traceback if anything (even SystemExit) went wrong.
 *
 * A failure is never rolled back: whatever imported stays imported, because
 * a C extension module taken out of sys.modules cannot be initialised again
 * in the backends forked from here ("cannot load module more than once per
 * process"). Backends then import the rest themselves and meet the original
 * error, which the module _hybrid_search_preload also keeps for them and for
 * hybrid_search_check(). Only our own pure-Python package is dropped, as on
 * success, so that backends run the version installed now.
 */
static const char *preload_program =
"import os, sys, traceback, types\n"
"error = None\n"
"try:\n"
"    sys.path.insert(0, os.path.join(venv, 'lib', 'python%d.%d' % sys.version_info[:2], 'site-packages'))\n"
"    from hybrid_search import preload\n"
"    preload.run()\n"
"except BaseException:\n"
"    error = traceback.format_exc()\n"
"    for name in [n for n in sys.modules if n == 'hybrid_search' or n.startswith('hybrid_search.')]:\n"
"        del sys.modules[name]\n"
"finally:\n"
"    state = types.ModuleType('_hybrid_search_preload')\n"
"    state.venv, state.error = venv, error\n"
"    sys.modules[state.__name__] = state\n"
"    sys.stdout.flush()\n"
"    sys.stderr.flush()\n";

static int
thread_count(void)
{
	DIR		   *tasks = opendir("/proc/self/task");
	struct dirent *entry;
	int			count = 0;

	if (tasks == NULL)
		return 1;				/* no /proc: nothing to check against */
	while ((entry = readdir(tasks)) != NULL)
		if (entry->d_name[0] != '.')
			count++;
	closedir(tasks);
	return count;
}

/*
 * Runs first at exit() (registered last). A backend that exits through
 * proc_exit() has already done all of PostgreSQL's cleanup; what exit() would
 * run next is the C++ static destructors of the preloaded libraries, about
 * 200 ms of freeing (bench/fork_exit_cost.py), in every backend, on memory
 * shared with the postmaster.
 * Skip them. Any other exit() takes the normal path.
 */
static void
skip_library_destructors(int status, void *arg)
{
	if (!proc_exit_inprogress)
		return;
	fflush(NULL);
	_exit(status);
}

/*
 * Python's own fork handling, which os.fork() does and PostgreSQL's fork()
 * does not: without it every backend would start with the postmaster's state
 * of random, numpy's and torch's generators (reseeded by their after-fork
 * callbacks) and stale interpreter locks.
 */
static void
python_before_fork(void)
{
	PyOS_BeforeFork();
}

static void
python_after_fork_in_parent(void)
{
	PyOS_AfterFork_Parent();
}

static void
python_after_fork_in_child(void)
{
	PyOS_AfterFork_Child();
}

/*
 * Run preload_program. Returns NULL on success, else the Python traceback
 * (palloc'd).
 */
static char *
run_preload(void)
{
	PyObject   *(*plpy_init) (void);
	PyObject   *globals;
	PyObject   *venv;
	PyObject   *result;
	PyObject   *error;
	char	   *message = NULL;

	/*
	 * PL/Python registers its plpy module just before it initializes Python,
	 * which is too late once Python runs. So register it now, from the
	 * library PL/Python will run in the backends.
	 */
	plpy_init = (PyObject *(*) (void))
		load_external_function("$libdir/plpython3", "PyInit_plpy", true, NULL);
	PyImport_AppendInittab("plpy", plpy_init);
	/* no Python signal handlers: the postmaster's own stay in charge */
	Py_InitializeEx(0);
	pthread_atfork(python_before_fork, python_after_fork_in_parent, python_after_fork_in_child);

	globals = PyDict_New();
	venv = PyUnicode_DecodeFSDefault(preload_venv);
	if (globals == NULL || venv == NULL ||
		PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) != 0 ||
		PyDict_SetItemString(globals, "venv", venv) != 0)
	{
		PyErr_Clear();
		Py_XDECREF(globals);
		Py_XDECREF(venv);
		return pstrdup("could not set up the Python globals");
	}
	Py_DECREF(venv);
	result = PyRun_String(preload_program, Py_file_input, globals, globals);
	if (result == NULL)
	{
		PyErr_Clear();
		message = pstrdup("the preload program itself failed");
	}
	else
	{
		Py_DECREF(result);
		error = PyDict_GetItemString(globals, "error");	/* borrowed */
		if (error != NULL && error != Py_None)
		{
			const char *text = PyUnicode_AsUTF8(error);

			message = pstrdup(text != NULL ? text : "(an error without text)");
			PyErr_Clear();
		}
	}
	Py_DECREF(globals);
	return message;
}

static int	kept_free_memory = 16384;

/*
 * Free memory the backend keeps from one query to the next. The executor
 * copies every row an index scan returns with xs_recheckorderby into its
 * reorder queue, whole (a documents row is up to 8 kB, toast_tuple_target),
 * so a query's memory grows to a few MB and is freed at its end. With
 * glibc's starting thresholds (mmap from 128 kB, trim past 128 kB free,
 * rising only once a mapped chunk is freed) the next query takes it from
 * the kernel again, a page fault every 4 kB: a third of a dense scan asked
 * for 100 rows (performance.md, session 43). Set to N kB (at least 256),
 * glibc keeps up to N kB free, and maps (and unmaps as they are freed) only
 * chunks of N/2 kB and more, at most its own ceiling of 32 MB. 0: glibc's
 * starting thresholds. Malloc settings in the environment win: then nothing
 * is set. Superusers only: a role could otherwise have its backend hold up
 * to a GB it no longer uses.
 */
static void
assign_kept_free_memory(int newval, void *extra)
{
#if defined(__GLIBC__) && defined(M_TRIM_THRESHOLD) && defined(M_MMAP_THRESHOLD)
	const char *tunables = getenv("GLIBC_TUNABLES");
	int			kept = newval > 0 ? Max(newval, 256) * 1024 : 128 * 1024;

	if ((tunables != NULL && strstr(tunables, "glibc.malloc.") != NULL) ||
		getenv("MALLOC_TRIM_THRESHOLD_") != NULL || getenv("MALLOC_MMAP_THRESHOLD_") != NULL)
		return;
	mallopt(M_MMAP_THRESHOLD, newval > 0 ? Min(kept / 2, 32 * 1024 * 1024) : kept);
	mallopt(M_TRIM_THRESHOLD, kept);
#endif
}

void
_PG_init(void)
{
	char	   *error;
	int			threads;

	sparse_init();
	dense_init();
	DefineCustomIntVariable("hybrid_search.kept_free_memory",
							"Free memory a backend keeps from one query to the next instead of giving it back to the kernel.",
							"Index scans whose rows the executor reorders copy every row they return: without it, "
							"every query faults that memory in again. 0: glibc's own starting thresholds. "
							"Ignored where the environment sets glibc's malloc tunables.",
							&kept_free_memory,
							16384, 0, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, assign_kept_free_memory, NULL);
	/* read-only: for hybrid_search_check() and a DBA's SHOW */
	DefineCustomBoolVariable("hybrid_search.preloaded",
							 "Whether the postmaster imported the model stack at its start.",
							 NULL,
							 &preloaded,
							 false,
							 PGC_INTERNAL,
							 GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							 NULL, NULL, NULL);
	/*
	 * No MarkGUCPrefixReserved("hybrid_search"): the extension's SQL uses
	 * hybrid_search.queue_writes as a transaction-local placeholder.
	 */

	/*
	 * Loaded later (the sparse_inverted access method lives here too): a
	 * PGC_POSTMASTER setting can no longer be defined, and nothing is
	 * preloaded.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomStringVariable("hybrid_search.preload_venv",
							   "PL/Python virtualenv whose model stack the postmaster imports for all backends.",
							   "Takes effect only with hybrid_search in shared_preload_libraries; empty: nothing is preloaded.",
							   &preload_venv,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	if (preload_venv[0] == '\0')
	{
		ereport(LOG,
				(errmsg("hybrid_search: hybrid_search.preload_venv is not set, nothing preloaded")));
		return;
	}

#if PY_VERSION_HEX >= 0x030C0000

	/*
	 * Since Python 3.12, registering a built-in module once Python runs is a
	 * fatal error, and PL/Python registers plpy on its first use in every
	 * backend: with Python started here, that would end every backend.
	 */
	ereport(WARNING,
			(errmsg("hybrid_search: preloading needs PL/Python on Python 3.11 or older, nothing preloaded"),
			 errhint("Remove hybrid_search from shared_preload_libraries; backends import the model stack themselves.")));
	return;
#endif

	error = run_preload();
	threads = thread_count();
	if (threads != 1)
		ereport(FATAL,
				(errmsg("hybrid_search: preloading left %d threads in the postmaster", threads),
				 errdetail("The postmaster forks every backend and must stay single-threaded."),
				 errhint("Remove hybrid_search from shared_preload_libraries, or unset the environment variable that asks a library for threads (such as OPENBLAS_NUM_THREADS).")));
	if (error != NULL)
	{
		ereport(WARNING,
				(errmsg("hybrid_search: could not preload the model stack from \"%s\"", preload_venv),
				 errdetail("%s", error),
				 errhint("Backends import the rest themselves and report this error when they need the model; hybrid_search_check() shows it. `hybrid-search setup` repairs the virtualenv; then restart the server.")));
		return;
	}
	SetConfigOption("hybrid_search.preloaded", "on", PGC_INTERNAL, PGC_S_OVERRIDE);
	on_exit(skip_library_destructors, NULL);
	ereport(LOG,
			(errmsg("hybrid_search: preloaded the model stack from \"%s\"", preload_venv)));
}
