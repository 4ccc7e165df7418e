"""What the postmaster imports once when hybrid_search is preloaded.

hybrid_search.so runs `run()` in the postmaster (shared_preload_libraries =
'hybrid_search', hybrid_search.preload_venv = the virtualenv). Every backend
forked afterwards finds torch, transformers and FlagEmbedding imported, in
pages it shares with the postmaster, instead of importing them into ~300 MB of
its own memory. Only third-party modules stay: our own are dropped again, so
that backends always run the module installed now, not the one of the
server's start.
"""

import gc
import sys

from . import environment


def run() -> None:
    environment.apply()
    import FlagEmbedding  # noqa: F401  (torch, transformers, the training stack it imports)
    import torch  # noqa: F401
    from transformers import XLMRobertaModel, XLMRobertaTokenizerFast  # noqa: F401

    for name in [n for n in sys.modules if n == "hybrid_search" or n.startswith("hybrid_search.")]:
        del sys.modules[name]
    gc.collect()
    # Objects of the preloaded modules never take part in a garbage collection:
    # a collection writes to every object it visits, which would copy the
    # shared pages into each backend.
    gc.freeze()
