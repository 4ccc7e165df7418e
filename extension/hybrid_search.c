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
#include <stdio.h>
#include <unistd.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

/* as PL/Python does: the Python headers redefine these */
#undef _POSIX_C_SOURCE
#undef _XOPEN_SOURCE
#include <Python.h>

PG_MODULE_MAGIC;

void		_PG_init(void);

static char *preload_venv = NULL;
static bool preloaded = false;

/* The Python code the postmaster runs, with `venv` set. */
static const char *preload_program =
"import os, sys\n"
"sys.path.insert(0, os.path.join(venv, 'lib', 'python%d.%d' % sys.version_info[:2], 'site-packages'))\n"
"from hybrid_search import preload\n"
"preload.run()\n";

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
 * 170 ms of freeing, in every backend, on memory shared with the postmaster.
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

/* Run preload_program; false (with the Python error in the log) if it failed. */
static bool
run_preload(void)
{
	PyObject   *(*plpy_init) (void);
	PyObject   *globals;
	PyObject   *venv;
	PyObject   *result;

	/*
	 * PL/Python registers its plpy module just before it initializes Python,
	 * and a built-in module added once Python runs cannot be imported. So
	 * register it now, from the library PL/Python will run in the backends.
	 */
	plpy_init = (PyObject *(*) (void))
		load_external_function("$libdir/plpython3", "PyInit_plpy", true, NULL);
	PyImport_AppendInittab("plpy", plpy_init);
	/* no Python signal handlers: the postmaster's own stay in charge */
	Py_InitializeEx(0);

	globals = PyDict_New();
	PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
	venv = PyUnicode_FromString(preload_venv);
	PyDict_SetItemString(globals, "venv", venv);
	Py_DECREF(venv);
	result = PyRun_String(preload_program, Py_file_input, globals, globals);
	Py_DECREF(globals);
	if (result == NULL)
	{
		PyErr_Print();			/* the traceback, to the server log */
		return false;
	}
	Py_DECREF(result);
	return true;
}

void
_PG_init(void)
{
	bool		imported;
	int			threads;

	DefineCustomStringVariable("hybrid_search.preload_venv",
							   "PL/Python virtualenv whose model stack the postmaster imports for all backends.",
							   "Takes effect only with hybrid_search in shared_preload_libraries; empty: nothing is preloaded.",
							   &preload_venv,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	/* read-only: for hybrid_search_check() and a DBA's SHOW */
	DefineCustomBoolVariable("hybrid_search.preloaded",
							 "Whether the postmaster imported the model stack at its start.",
							 NULL,
							 &preloaded,
							 false,
							 PGC_INTERNAL,
							 0,
							 NULL, NULL, NULL);
	/*
	 * No MarkGUCPrefixReserved("hybrid_search"): the extension's SQL uses
	 * hybrid_search.queue_writes as a transaction-local placeholder.
	 */

	if (!process_shared_preload_libraries_in_progress)
		return;
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

	imported = run_preload();
	threads = thread_count();
	if (threads != 1)
		ereport(FATAL,
				(errmsg("hybrid_search: preloading left %d threads in the postmaster", threads),
				 errdetail("The postmaster forks every backend and must stay single-threaded."),
				 errhint("Remove hybrid_search from shared_preload_libraries, or unset the environment variable that asks a library for threads (such as OPENBLAS_NUM_THREADS).")));
	if (!imported)
	{
		ereport(WARNING,
				(errmsg("hybrid_search: could not preload the model stack from \"%s\"", preload_venv),
				 errdetail("The Python error is above in the server log."),
				 errhint("Backends will import it themselves; check hybrid_search.preload_venv.")));
		return;
	}
	preloaded = true;
	on_exit(skip_library_destructors, NULL);
	ereport(LOG,
			(errmsg("hybrid_search: preloaded the model stack from \"%s\"", preload_venv)));
}
