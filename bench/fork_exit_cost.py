"""What a preloading postmaster costs each process it forks: the fork itself
(copying the page tables of the imported stack) and exit() (the C++ static
destructors of the loaded libraries), against _exit(), which hybrid_search.so
makes a backend take once PostgreSQL's cleanup is done.

A plain Python process stands in for the postmaster: it imports the stack as
hybrid_search.preload does, then forks children that exit at once. Usage:

    .venv/bin/python bench/fork_exit_cost.py [--forks 20]
"""

import argparse
import ctypes
import gc
import os
import sys
import time

from common import print_table

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "plpython"))


def fork_and_exit(forks: int, skip_destructors: bool) -> tuple[float, float]:
    """Mean ms of fork() in the parent, and of fork + exit + wait."""
    libc = ctypes.CDLL(None)
    forking = total = 0.0
    for _ in range(forks):
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            if skip_destructors:
                os._exit(0)
            libc.exit(0)
        forking += time.perf_counter() - started
        os.waitpid(pid, 0)
        total += time.perf_counter() - started
    return forking / forks * 1000, total / forks * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for stage in ("nothing imported", "the model stack imported"):
        if stage != "nothing imported":
            from hybrid_search import environment

            environment.apply()
            import FlagEmbedding  # noqa: F401
            import torch  # noqa: F401
            from transformers import XLMRobertaModel  # noqa: F401

            gc.collect()
            gc.freeze()
        for skip in (False, True):
            fork_ms, total_ms = fork_and_exit(args.forks, skip)
            how = "_exit()" if skip else "exit()"
            if not skip:
                rows.append((f"{stage}: fork, ms", f"{fork_ms:.1f}"))
            rows.append((f"{stage}: fork + {how} + wait, ms", f"{total_ms:.1f}"))
    print_table(rows)


if __name__ == "__main__":
    main()
