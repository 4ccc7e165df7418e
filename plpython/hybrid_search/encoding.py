"""What every encoder produces and what is done with it, whichever model runs:
the Encoding type, the batch loop (encode), the per-backend query cache in front
of the shared one (encode_query), this backend's Stats, and the errors the SQL
layer translates. The models themselves: bge_m3 (BGE-M3 through FlagEmbedding)
and encoders (the others, and the registry that picks and caches them).
"""

import time
from collections import OrderedDict
from dataclasses import dataclass, field


class ModelNotAvailable(RuntimeError):
    """The configured model cannot be loaded; the message says why."""


class ContentTooLong(ValueError):
    """A text exceeds max_content_chars: tokenizing it would cost too much memory."""


@dataclass
class Stats:
    """What this backend has done with the model (hybrid_search_model_stats)."""

    model: str | None = None
    load_seconds: float | None = None
    encode_calls: int = 0
    texts_encoded: int = 0
    encode_seconds: float = 0.0
    query_cache_hits: int = 0
    shared_cache_hits: int = 0  # found in hybrid_search_query_cache (another backend's work)
    colbert_texts: int = 0  # texts whose ColBERT vectors were computed


@dataclass
class Encoding:
    dense: object  # numpy float32 vector
    lexical_weights: dict = field(default_factory=dict)  # {"token_id": weight}
    colbert: object = None  # numpy float32 (tokens - 1, dim), normalised; only when asked for


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc keeps them otherwise).

    A forward pass over a batch allocates activations of tens to hundreds of
    MB; freed, they would stay in glibc's arenas as private memory of the
    backend for the rest of its life. malloc_trim costs well under a
    millisecond when there is little to return.
    """
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes

        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


stats = Stats()


def encode(
    settings,
    model,
    texts: list[str],
    between_batches=lambda: None,
    colbert: bool = False,
    threads: int | None = None,
) -> list[Encoding]:
    """Dense vectors and lexical weights (and ColBERT vectors if colbert) of texts:
    one forward pass per batch_size texts, longest first so that each batch pads little,
    on threads torch threads (default num_threads, the setting for writes).

    between_batches runs before every batch but the first: the server cannot
    interrupt Python code, so this is where a cancel or statement_timeout lands.
    """
    import torch

    too_long = [len(t) for t in texts if len(t) > settings.max_content_chars]
    if too_long:
        raise ContentTooLong(
            f"a text of {too_long[0]} characters exceeds max_content_chars"
            f" ({settings.max_content_chars})"
        )
    threads = threads or settings.num_threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    max_length = min(settings.max_length, model.max_positions)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    encodings: list[Encoding | None] = [None] * len(texts)
    for start in range(0, len(order), settings.batch_size):
        if start:
            between_batches()
        members = order[start : start + settings.batch_size]
        started = time.perf_counter()
        chunk = [texts[i] for i in members]
        batch = (
            model.encode_batch(chunk, max_length, colbert=True)
            if colbert
            else model.encode_batch(chunk, max_length)
        )
        for i, encoding in zip(members, batch, strict=True):
            encodings[i] = encoding
        stats.encode_seconds += time.perf_counter() - started
        stats.encode_calls += 1
        stats.texts_encoded += len(members)
        stats.colbert_texts += len(members) if colbert else 0
    release_freed_memory()  # the batches' activations, else kept by glibc for good
    return encodings


QUERY_CACHE_SIZE = 256
_query_cache: OrderedDict = OrderedDict()


def encode_query(
    settings, model, text: str, colbert: bool = False, shared=None, role: int = 0
) -> Encoding:
    """One text, through a per-backend LRU cache: an application repeating a
    query (paging, retries, popular searches) pays the forward pass once. With
    colbert, the entry also holds the query's ColBERT vectors (computed in the
    same forward pass as its dense and sparse vectors when asked for first).
    Entries of this backend's cache are the role's (current_user) own: roles sharing
    a backend (SET ROLE, a pooler) never hit each other's queries, which
    stats.query_cache_hits would show.

    shared: None, or a function returning the cache shared by the backends
    (query_cache.Shared), asked on a miss here, before running the model, and
    given what the model computed. ColBERT vectors are not shared.

    A text whose dense and sparse vectors are cached but whose ColBERT vectors
    are asked for runs the model for those alone and keeps the cached vectors:
    their last bits depend on how many threads torch ran on (query_threads 0
    follows the load), and a query must score the same on every call.
    """
    max_length = min(settings.max_length, model.max_positions)
    key = (role, settings.model_key, max_length, text)
    cached = _query_cache.get(key)
    if cached is not None and (cached.colbert is not None or not colbert):
        _query_cache.move_to_end(key)
        stats.query_cache_hits += 1
        return cached
    table = shared_key = None
    if shared is not None:
        table = shared()
        shared_key = table.key(model, max_length, text)
        if cached is None:
            cached = table.get(shared_key)
            if cached is not None:
                stats.shared_cache_hits += 1
                if not colbert:
                    _remember(key, cached)
                    return cached
    (encoding,) = encode(
        settings, model, [text], colbert=colbert, threads=settings.threads_for_queries
    )
    if cached is not None:
        encoding = Encoding(cached.dense, cached.lexical_weights, encoding.colbert)
    elif table is not None:
        table.put(shared_key, encoding)
    _remember(key, encoding)
    return encoding


def _remember(key, encoding) -> None:
    _query_cache[key] = encoding
    _query_cache.move_to_end(key)
    if len(_query_cache) > QUERY_CACHE_SIZE:
        _query_cache.popitem(last=False)
