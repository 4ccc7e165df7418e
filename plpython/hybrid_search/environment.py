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
}


def apply() -> None:
    """Set each default the server's environment does not set already."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def site_packages(venv: str) -> Path:
    return (
        Path(venv) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    )


# what preload.run() imports, by their directories in site-packages
PRELOADED_PACKAGES = ("FlagEmbedding", "torch", "transformers")


def packages_changed_since(venv: str, moment: float) -> bool:
    """Was a preloaded package installed anew into venv after moment (a time stamp)?
    pip writes a package's directory anew, which gives it a new mtime."""
    site = site_packages(venv)
    for package in PRELOADED_PACKAGES:
        try:
            if (site / package).stat().st_mtime > moment:
                return True
        except OSError:
            continue
    return False
