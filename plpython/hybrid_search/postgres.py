"""This backend's state as PostgreSQL itself holds it, read through the functions the
postgres executable exports to the libraries it loads (ctypes): no SQL statement, so
usable where SQL cannot run (parallel mode, see parallel.py) and at no cost per call."""

import ctypes

_functions: dict = {}


def _call(name: str, restype):
    function = _functions.get(name)
    if function is None:
        function = getattr(ctypes.CDLL(None), name)
        function.argtypes = []
        function.restype = restype
        _functions[name] = function
    return function()


def in_parallel_mode() -> bool:
    """IsInParallelMode(): a parallel worker, or a leader running a parallel plan."""
    return bool(_call("IsInParallelMode", ctypes.c_bool))


def current_user() -> int:
    """GetUserId(): the OID of current_user (what SET ROLE and SECURITY DEFINER change)."""
    return int(_call("GetUserId", ctypes.c_uint))
