"""Environment defaults set before torch, transformers or FlagEmbedding load."""

import os
import sys
from pathlib import Path

DEFAULTS = {
    # no progress bars in the server log
    "TQDM_DISABLE": "1",
    # never a download from inside a database transaction
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # numpy's OpenBLAS and pyarrow's jemalloc start threads as they load; in a
    # preloading postmaster, which forks every backend, threads must not run
    # (and torch does the heavy arithmetic, with its own threads)
    "OPENBLAS_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
    # torch's OpenMP threads sleep when they have no work instead of spinning: a
    # server's cores are shared by its backends, and a busy-waiting thread whose
    # peer was descheduled made a 2-thread query embedding 10x slower on a loaded
    # 2-core machine (1,438 ms against 134 ms passive and 140 ms on one thread)
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply() -> None:
    """Set each default the server's environment does not set already."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def site_packages(venv: str) -> Path:
    return (
        Path(venv) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    )


def packages_changed_since(venv: str, moment: float) -> bool:
    """Was a package other than ours installed into venv after moment (a time stamp)?
    The postmaster preloads torch and everything it and FlagEmbedding import; pip
    writes a package's .dist-info directory anew on every install."""
    site = site_packages(venv)
    for info in site.glob("*.dist-info"):
        if info.name.startswith("hybrid_search"):
            continue  # our module: backends import it themselves
        try:
            if info.stat().st_mtime > moment:
                return True
        except OSError:
            continue
    return False


def preload_error() -> str | None:
    """The traceback of the postmaster's preload (hybrid_search.so) if it failed."""
    return getattr(sys.modules.get("_hybrid_search_preload"), "error", None)
