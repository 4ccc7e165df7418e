"""Our PL/Python functions refuse to run while the backend is in parallel mode.

On PostgreSQL 15 (and 16), plpy.execute, plpy.prepare, plpy.cursor and
plpy.subtransaction start an internal subtransaction before PL/Python's own
error handling begins (plpy_spi.c: PLy_spi_subtransaction_begin outside
PG_TRY), and BeginInternalSubTransaction raises ERROR in parallel mode
("cannot start subtransactions during a parallel operation"). That ERROR
longjmps through the running Python interpreter: its thread state keeps
pointers to the abandoned C frames, and a later PL/Python call in the same
backend fails with "SystemError: unknown opcode" or dies of signal 11, which
restarts the whole server.

Our functions are declared PARALLEL UNSAFE, so the planner never runs them in
parallel mode; a user's function mislabelled PARALLEL SAFE or RESTRICTED that
calls one of them still can. This is the one check that makes them raise a
clean error then, before any SQL: every entry of sql_api runs it first.
(A body whose backend has not imported this module yet must load it with SQL
first; the bodies' shared preamble guards that one statement the same way.)
"""

from .postgres import in_parallel_mode


def refuse(plpy, caller: str) -> None:
    """A clean ERROR (25000, as PostgreSQL's own parallel-mode refusals) in parallel mode."""
    if in_parallel_mode():
        plpy.error(
            f"{caller}: cannot run during a parallel operation",
            detail="hybrid_search's PL/Python functions run SQL in subtransactions, which"
            " PostgreSQL does not allow in parallel mode; they are declared PARALLEL UNSAFE.",
            hint="a function that calls them must be PARALLEL UNSAFE too",
            sqlstate="25000",  # invalid_transaction_state
        )
