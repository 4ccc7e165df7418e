"""Entry points of the extension's PL/Python functions.

Each takes the `plpy` module of the calling function, turns model problems
into one clear PostgreSQL error, and returns values in the shapes PL/Python
converts to the declared SQL types.
"""

import functools
import inspect

from . import (
    backends,
    bge_m3,
    catalog,
    colbert,
    encoders,
    encoding,
    numerics,
    parallel,
    postgres,
    query_cache,
    settings,
    vectors,
)
from . import check as checks
from .legacy import keyword_db

_FIX_HINT = (
    "install a model with `hybrid-search setup --model <hub id or directory>` "
    "(or `hybrid-search setup --test-model` for the tiny test model) as root, "
    "then SELECT hybrid_search_set_model('<directory>')"
)


def _load(plpy):
    """Settings and the loaded model, or one clear error naming the configured model."""
    current = settings.read(plpy)
    try:
        return current, encoders.get(current)
    except encoding.ModelNotAvailable as error:
        plpy.error(
            f"hybrid_search: cannot load model '{current.embedding_model}'"
            f" (hybrid_search_settings.embedding_model): {error}",
            hint=_FIX_HINT,
            sqlstate="58P01",  # undefined_file
        )


_interrupt_check = None


def _check_for_interrupts(plpy):
    """Any SPI statement lets the server act on a pending cancel or statement_timeout
    (it raises QueryCanceled here, which aborts the transaction as usual)."""
    global _interrupt_check
    if _interrupt_check is None:
        _interrupt_check = plpy.prepare("select")
    plpy.execute(_interrupt_check)


def _encode(plpy, texts, cached=False, colbert_vectors=False, settings_and_model=None):
    """(model, encodings); a query (cached) goes through the per-backend query cache.
    colbert_vectors: compute ColBERT vectors too (BGE-M3 only). settings_and_model: the
    (settings, model) pair _load already returned, so that they are not read again."""
    current, loaded = settings_and_model or _load(plpy)
    try:
        if cached:
            (text,) = texts
            shared = (
                (lambda: query_cache.Shared(plpy, current))
                if current.query_cache_entries > 0
                else None
            )
            return loaded, [
                encoding.encode_query(
                    current,
                    loaded,
                    text,
                    colbert=colbert_vectors,
                    shared=shared,
                    role=postgres.current_user(),
                )
            ]
        return loaded, encoding.encode(
            current,
            loaded,
            texts,
            lambda: _check_for_interrupts(plpy),
            colbert=colbert_vectors,
        )
    except encoding.ContentTooLong as error:
        plpy.error(
            f"hybrid_search: {error}",
            hint="split the document, or raise the limit with"
            " hybrid_search_configure(max_content_chars => ...)",
            sqlstate="54000",  # program_limit_exceeded
        )


def embed_dense(plpy, content):
    _, (encoding,) = _encode(plpy, [content], cached=True)
    return vectors.dense_literal(encoding.dense)


def embed_sparse(plpy, content):
    loaded, (encoding,) = _encode(plpy, [content], cached=True)
    return vectors.sparse_literal(encoding.lexical_weights, loaded.vocabulary_size)


def embed(plpy, content):
    loaded, (encoding,) = _encode(plpy, [content], cached=True)
    return (
        vectors.dense_literal(encoding.dense),
        vectors.sparse_literal(encoding.lexical_weights, loaded.vocabulary_size),
    )


def embed_batch(plpy, contents):
    """(ord, dense, sparse) per input element, in order; NULL elements stay NULL."""
    return _embed_rows(plpy, contents, for_storage=False)


def embed_for_storage(plpy, contents):
    """(ord, dense, sparse, colbert) per element: embed_batch's rows plus float16 ColBERT
    vectors when colbert_store is on and the model is BGE-M3 (else NULL: not computed)."""
    return _embed_rows(plpy, contents, for_storage=True)


def _embed_rows(plpy, contents, for_storage):
    width = 3 if for_storage else 2
    positions = [i for i, text in enumerate(contents) if text is not None]
    if not positions:
        return [(i + 1, *[None] * width) for i in range(len(contents))]
    current, loaded = _load(plpy)
    store = for_storage and current.colbert_store and bge_m3.is_bge_m3(loaded)
    _, encodings = _encode(
        plpy,
        [contents[i] for i in positions],
        colbert_vectors=store,
        settings_and_model=(current, loaded),
    )
    rows = {
        i: (
            vectors.dense_literal(e.dense),
            vectors.sparse_literal(e.lexical_weights, loaded.vocabulary_size),
            colbert.to_bytes(e.colbert) if store else None,
        )[:width]
        for i, e in zip(positions, encodings, strict=True)
    }
    return [(i + 1, *rows.get(i, [None] * width)) for i in range(len(contents))]


def _colbert_refused(plpy, caller, current):
    plpy.error(
        f"{caller}: ColBERT re-ranking needs BGE-M3 making both legs, but the encoders are"
        f" {current.embedding_model}",
        hint="SELECT hybrid_search_set_model('<BGE-M3 directory>'), or search without"
        " colbert_rerank",
        sqlstate="0A000",  # feature_not_supported
    )


def colbert_check_encoders(plpy, caller):
    """Refuses (0A000) unless the configured encoders are BGE-M3; loads no model."""
    current = settings.read(plpy)
    if current.dense_model != current.sparse_model or (
        encoders.kind(current.dense_model) != encoders.BGE_M3
    ):
        _colbert_refused(plpy, caller, current)


def _colbert_model(plpy, caller):
    colbert_check_encoders(plpy, caller)
    current, loaded = _load(plpy)
    if not bge_m3.is_bge_m3(loaded):
        _colbert_refused(plpy, caller, current)
    return current, loaded


def _colbert_query_vectors(plpy, query):
    """((settings, model), the query's ColBERT vectors), through the query cache: computed
    with its dense and sparse vectors in one forward pass the first time."""
    current, loaded = _colbert_model(plpy, "colbert_rerank")
    _, (encoding,) = _encode(
        plpy, [query], cached=True, colbert_vectors=True, settings_and_model=(current, loaded)
    )
    return (current, loaded), encoding.colbert


def colbert_query(plpy, query):
    """The query's ColBERT vectors, computed (with its dense and sparse vectors, in one
    forward pass) into the query cache; returns how many there are."""
    _, query_vectors = _colbert_query_vectors(plpy, query)
    return len(query_vectors)


_colbert_plan = None


def colbert_rerank(plpy, query, ids):
    """(id, rank, score) of the given documents the caller can see, by ColBERT MaxSim
    against the query: stored vectors where documents.colbert has them, else computed
    now from the content (one model call per batch_size documents). NULL ids are skipped."""
    global _colbert_plan
    ids = sorted({i for i in ids if i is not None})
    pair, query_vectors = _colbert_query_vectors(plpy, query)
    if not ids:
        return []
    if _colbert_plan is None:
        ours, _ = catalog.schemas(plpy)
        _colbert_plan = plpy.prepare(
            "select d.id, d.colbert, case when d.colbert is null then d.content end as content"
            f" from {ours}.documents as d where d.id = any($1)",
            ["bigint[]"],
        )
    rows = plpy.execute(_colbert_plan, [ids])
    dim = pair[1].colbert_dimensions
    vectors_of = {r["id"]: colbert.from_bytes(r["colbert"], dim) for r in rows if r["colbert"]}
    missing = [r for r in rows if not r["colbert"]]
    if missing:
        _, encodings = _encode(
            plpy, [r["content"] for r in missing], colbert_vectors=True, settings_and_model=pair
        )
        for r, e in zip(missing, encodings, strict=True):
            vectors_of[r["id"]] = colbert.rounded(e.colbert)
    scored = sorted(
        ((colbert.maxsim(query_vectors, v), i) for i, v in vectors_of.items()),
        key=lambda t: (-t[0], t[1]),
    )
    return [(i, rank, score) for rank, (score, i) in enumerate(scored, start=1)]


def model_info(plpy):
    current, loaded = _load(plpy)
    return {
        "model": current.embedding_model,
        "dense_dimensions": loaded.dense_dimensions,
        "vocabulary_size": loaded.vocabulary_size,
        "max_length": min(current.max_length, loaded.max_positions),
        "load_seconds": loaded.load_seconds,
        "dtype": loaded.dtype,
        "dtype_reason": loaded.dtype_reason,
        "weights": loaded.weights,
    }


def prepare_weights(plpy):
    """Writes the converted copy of the configured BGE-M3 weights that the dtype
    choice wants, if missing (numerics.prepare); returns 'dtype: reason'."""
    current = settings.read(plpy)
    choices = [
        numerics.prepare(location, current.dtype, current.device)
        for location in sorted({current.dense_model, current.sparse_model})
        if encoders.kind(location) == encoders.BGE_M3
    ]
    return "; ".join(f"{c.dtype}: {c.reason}" for c in choices) or "fp32: no BGE-M3 model"


def model_stats():
    import os

    s = encoding.stats
    return {
        "pid": os.getpid(),
        "model": s.model,
        "loaded": s.load_seconds is not None,
        "load_seconds": s.load_seconds,
        "encode_calls": s.encode_calls,
        "texts_encoded": s.texts_encoded,
        "encode_seconds": s.encode_seconds,
        "query_cache_hits": s.query_cache_hits,
    }


def query_tokens(plpy, query):
    loaded, (encoding,) = _encode(plpy, [query], cached=True)
    weights = sorted(encoding.lexical_weights.items(), key=lambda item: (-item[1], int(item[0])))
    return [(int(t), loaded.token_text(int(t)), float(w)) for t, w in weights]


def backend_memory(plpy):
    """(pid, backend_type, application_name, torch_loaded, model_files_mapped, rss_mb, pss_mb,
    private_mb) for every backend of the server that can still be read."""
    current = settings.read(plpy)
    location = numerics.resolve(current.dense_model, current.dtype, current.device).location
    rows = plpy.execute(
        "select pid, backend_type, application_name from pg_catalog.pg_stat_activity order by pid"
    )
    result = []
    for row in rows:
        described = backends.describe(row["pid"], location)
        if described is not None:
            result.append({**row, **described})
    return result


def check(plpy):
    """(check_name, status, detail) rows of hybrid_search_check()."""
    return checks.run(plpy)


# Entry points only the frozen 0.1.0 and 0.2.0 scripts call (legacy/ says when), for a
# database that still runs one of them on this module until ALTER EXTENSION hybrid_search
# UPDATE: both legs are index scans now, so the sparse leg has nothing left to rebuild
# and its search is the exact scan; the keyword leg's table-based index lives on in
# legacy/ for them.
def rebuild_sparse_index(plpy):
    """hybrid_search_rebuild_sparse_index() of older scripts: nothing left to rebuild."""
    ours, _ = catalog.schemas(plpy)
    documents = plpy.execute(f"select count(*) as n from {ours}.documents")[0]["n"]
    return (documents, 0, 0.0)


def sparse_index_search(plpy, query_sparse, k, filter_json):
    """_sparse_search_index() of older scripts: the exact scan gives the same rows."""
    ours, vector = catalog.schemas(plpy)
    plan = plpy.prepare(
        f"select id, score from {ours}.sparse_search_scan($1::{vector}.sparsevec, $2, $3::jsonb)",
        ["text", "integer", "text"],
    )
    return [(r["id"], r["score"]) for r in plpy.execute(plan, [query_sparse, k, filter_json])]


def rebuild_keyword_index(plpy):
    k1, b = keyword_db.bm25_parameters(plpy)
    return keyword_db.rebuild(plpy, k1, b)


def keyword_search(plpy, text_search_config, query, k, filter_json, match, exact):
    """(id, score) best first: BM25 through the keyword index, or a scan when exact."""
    run = keyword_db.scan if exact else keyword_db.search
    return run(plpy, text_search_config, query, k, filter_json, match)


def _refusing_parallel_mode(entry):
    @functools.wraps(entry)
    def guarded(plpy, *args):
        parallel.refuse(plpy, entry.__name__)
        return entry(plpy, *args)

    return guarded


# Every entry point that is given plpy refuses parallel mode before its first SQL
# statement (parallel.py says why): wrapped here, once, rather than in each.
for _name, _entry in list(globals().items()):
    if (
        not _name.startswith("_")
        and inspect.isfunction(_entry)
        and _entry.__module__ == __name__
        and next(iter(inspect.signature(_entry).parameters), None) == "plpy"
    ):
        globals()[_name] = _refusing_parallel_mode(_entry)
