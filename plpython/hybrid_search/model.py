"""BGE-M3 through FlagEmbedding, loaded once per backend and cached.

A backend keeps at most one model: loading costs seconds and, for the real
BGE-M3, gigabytes, so a settings change replaces the cached model instead of
adding a second one.

FlagEmbedding loads the model (BGEM3FlagModel) and runs its forward pass
(dense, sparse and ColBERT heads). Batching is ours: BGEM3FlagModel.encode
runs a trial forward pass on every call to pick a batch size, which doubles
the cost of the small calls a database makes, and it computes nothing we
would skip here.
"""

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from . import encoders, environment, numerics

environment.apply()  # before FlagEmbedding/transformers are imported


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


class LoadedModel:
    """A BGEM3FlagModel with the facts the schema needs about it."""

    def __init__(self, location: str, device: str, dtype: str = "fp32", pack: bool = False):
        if location.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(location)):
            raise ModelNotAvailable(f"there is no model directory {location}")
        started = time.perf_counter()
        # dtype 'auto': bf16 where the CPU has bf16 units (from the converted copy of the
        # weights), else fp32; the choice and its reason are reported by model_info
        choice = numerics.resolve(location, dtype, device)
        dtype = self.dtype = choice.dtype
        self.dtype_reason, self.weights = choice.reason, choice.location
        try:
            from FlagEmbedding import BGEM3FlagModel

            self.flag_model = BGEM3FlagModel(
                choice.location, use_fp16=dtype == "fp16", use_bf16=dtype == "bf16", devices=device
            )
            if dtype == "int8":
                import torch

                # int8 weights and activations in every Linear layer, computed on load
                torch.ao.quantization.quantize_dynamic(
                    self.flag_model.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
                )
        except Exception as error:  # any failure to load means the same thing to the caller
            preload = environment.preload_error()
            also = " (the server's preload failed too; hybrid_search_check() shows it)"
            raise ModelNotAvailable(
                f"{type(error).__name__}: {error}{also if preload else ''}"
            ) from error
        self.flag_model.model.to(device)
        self.flag_model.model.eval()
        self.device = device
        if pack:
            self.dtype_reason += self._pack()
        tokenizer = self.flag_model.tokenizer
        # transformers' XLM-R tokenizer keeps the vocabulary it built the Rust tokenizer
        # from as a Python list, used by nothing after: for BGE-M3's 250,002 pieces
        # about 50 MB of every backend
        vars(tokenizer).pop("_vocab", None)
        release_freed_memory()  # what loading allocated and dropped
        self.load_seconds = time.perf_counter() - started
        # tokens that never carry lexical weight (as in FlagEmbedding)
        self.special_ids = np.array(
            [
                tokenizer.convert_tokens_to_ids(tokenizer.special_tokens_map[name])
                for name in ("cls_token", "eos_token", "pad_token", "unk_token")
                if name in tokenizer.special_tokens_map
            ]
        )
        config = self.flag_model.model.model.config
        self.location = location
        self.dense_dimensions = int(config.hidden_size)
        self.colbert_dimensions = int(self.flag_model.model.colbert_linear.out_features)
        self.vocabulary_size = int(config.vocab_size)
        # XLM-RoBERTa reserves two positions (padding offset), so 8194 allows 8192 tokens
        self.max_positions = int(config.max_position_embeddings) - 2

    def _pack(self) -> str:
        """pack_weights: the transformer's bf16 linear layers packed for oneDNN; what
        was done, for dtype_reason."""
        from . import packing

        if self.dtype != "bf16" or self.device != "cpu" or not packing.available():
            return "; pack_weights: only bf16 weights on a CPU with oneDNN are packed"
        try:
            packed = packing.pack_linear_layers(self.flag_model.model.model)
        except RuntimeError as error:  # an operator this torch build lacks or refuses
            first_line = (str(error).strip().splitlines() or [""])[0]
            return f"; pack_weights: packing failed ({first_line}), weights left unpacked"
        return f"; pack_weights: {packed / 1e6:,.0f} MB of bf16 weights packed for oneDNN (private)"

    def token_text(self, token_id: int) -> str:
        return self.flag_model.tokenizer.convert_ids_to_tokens(token_id)

    def encode_batch(
        self, texts: list[str], max_length: int, colbert: bool = False
    ) -> list[Encoding]:
        """Dense vectors and lexical weights of texts from one forward pass of
        FlagEmbedding's model (dense and sparse heads; the ColBERT head only when
        colbert is asked for: writes that do not store ColBERT vectors never
        compute them)."""
        import torch

        tokenizer = self.flag_model.tokenizer
        batch = tokenizer(
            texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            output = self.flag_model.model(
                batch, return_dense=True, return_sparse=True, return_colbert_vecs=colbert
            )
        dense = output["dense_vecs"].float().cpu().numpy()
        weights = output["sparse_vecs"].squeeze(-1).float().cpu().numpy()
        ids = batch["input_ids"].cpu().numpy()
        encodings = [
            Encoding(dense[row], _lexical_weights(weights[row], ids[row], self.special_ids))
            for row in range(len(texts))
        ]
        if colbert:
            vecs = output["colbert_vecs"].float().cpu().numpy()
            lengths = batch["attention_mask"].sum(dim=1).cpu().numpy()
            for row, encoding in enumerate(encodings):
                # as FlagEmbedding's encode: no CLS vector, no padding (tokens - 1 rows)
                encoding.colbert = vecs[row, : int(lengths[row]) - 1]
        return encodings


def is_bge_m3(loaded) -> bool:
    """Only BGE-M3 (one model making both legs) has a ColBERT head."""
    return isinstance(loaded, LoadedModel)


_cached: tuple[tuple, "LoadedModel | encoders.Pair"] | None = None
stats = Stats()


def get(settings) -> "LoadedModel | encoders.Pair":
    """The model(s) for these settings, loading them (once per backend) if needed:
    BGE-M3 alone when it makes both legs, else a pair of encoders."""
    global _cached
    if _cached is not None and _cached[0] == settings.model_key:
        return _cached[1]
    _cached = None  # drop the old model before loading a new one
    if settings.dense_model == settings.sparse_model and (
        encoders.kind(settings.dense_model) == encoders.BGE_M3
    ):
        model = LoadedModel(
            settings.dense_model, settings.device, settings.dtype, settings.pack_weights
        )
    else:
        model = encoders.Pair(
            settings.dense_model,
            settings.sparse_model,
            settings.device,
            settings.dtype,
            settings.pack_weights,
        )
    _cached = (settings.model_key, model)
    stats.model, stats.load_seconds = settings.embedding_model, model.load_seconds
    return model


def _lexical_weights(weights: np.ndarray, ids: np.ndarray, special: np.ndarray) -> dict:
    """{"token_id": weight}: each token's largest weight over its positions."""
    keep = (weights > 0) & ~np.isin(ids, special)
    result: dict[str, float] = {}
    for token, weight in zip(ids[keep].tolist(), weights[keep].tolist(), strict=True):
        if weight > result.get(str(token), 0.0):
            result[str(token)] = weight
    return result


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
        from . import query_cache

        table, shared_key = shared(), query_cache.key(settings, model, max_length, text)
        found = None if colbert else table.get(shared_key)
        if found is not None:
            stats.shared_cache_hits += 1
            _remember(key, found)
            return found
    (encoding,) = encode(
        settings, model, [text], colbert=colbert, threads=settings.threads_for_queries
    )
    if table is not None:
        table.put(shared_key, encoding)
    _remember(key, encoding)
    return encoding


def _remember(key, encoding) -> None:
    _query_cache[key] = encoding
    _query_cache.move_to_end(key)
    if len(_query_cache) > QUERY_CACHE_SIZE:
        _query_cache.popitem(last=False)
