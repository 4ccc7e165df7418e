"""BGE-M3, loaded once per backend and cached.

A backend keeps at most one model: loading costs seconds and, for the real
BGE-M3, gigabytes, so a settings change replaces the cached model instead of
adding a second one.

The model is what FlagEmbedding's BGEM3FlagModel loads (AutoTokenizer,
AutoModel, the sparse head from sparse_linear.pt) and its forward pass is
FlagEmbedding's (CLS vector, L2-normalised; relu of the sparse head per
token), written here with plain transformers: importing FlagEmbedding pulls
in its training stack (datasets, pyarrow, pandas, peft, scipy), about 55 MB
of private memory in every backend that embeds, for code a backend never
runs. The tests compare every output with FlagEmbedding's. The ColBERT head
is not loaded (its vectors are not stored). Batching is ours too:
BGEM3FlagModel.encode runs a trial forward pass on every call to pick a batch
size, which doubles the cost of the small calls a database makes.
"""

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from . import encoders

# Set before transformers is imported: no progress bars in the
# server log, and never a download from inside a database transaction.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@dataclass
class Encoding:
    dense: object  # numpy float32 vector
    lexical_weights: dict = field(default_factory=dict)  # {"token_id": weight}


TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "float32"}


def _model_directory(location: str) -> str:
    """A local directory as it is; a hub id from the Hugging Face cache, never downloaded."""
    path = os.path.expanduser(location)
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=location, local_files_only=True)


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc keeps them otherwise).

    A forward pass over a batch allocates activations of tens to hundreds of
    MB; freed, they stay in glibc's arenas as private memory of the backend
    for the rest of its life. malloc_trim costs well under a millisecond when
    there is little to return.
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
    """BGE-M3 (transformer and sparse head) with the facts the schema needs about it."""

    def __init__(self, location: str, device: str, dtype: str = "fp32"):
        if location.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(location)):
            raise ModelNotAvailable(f"there is no model directory {location}")
        started = time.perf_counter()
        try:
            import torch
            import transformers

            directory = _model_directory(location)
            torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
            # transformers' XLM-R tokenizer keeps the vocabulary it built the Rust tokenizer
            # from as a Python list, used by nothing after: for BGE-M3's 250,002 pieces
            # about 50 MB of every backend
            vars(self.tokenizer).pop("_vocab", None)
            # safetensors in the dtype asked for stay memory-mapped: shared by backends
            self.model = transformers.AutoModel.from_pretrained(directory, dtype=torch_dtype)
            config = self.model.config
            self.sparse_linear = torch.nn.Linear(config.hidden_size, 1, dtype=torch_dtype)
            self.sparse_linear.load_state_dict(
                torch.load(
                    os.path.join(directory, "sparse_linear.pt"),
                    map_location="cpu",
                    weights_only=True,
                )
            )
            if dtype == "int8":
                # int8 weights and activations in every Linear layer, computed on load
                parts = torch.nn.ModuleDict({"model": self.model, "sparse": self.sparse_linear})
                torch.ao.quantization.quantize_dynamic(
                    parts, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
                )
                self.model, self.sparse_linear = parts["model"], parts["sparse"]
        except Exception as error:  # any failure to load means the same thing to the caller
            raise ModelNotAvailable(f"{type(error).__name__}: {error}") from error
        self.model.to(device).eval()
        self.sparse_linear.to(device).eval()
        self.device = device
        release_freed_memory()  # what loading allocated and dropped
        self.load_seconds = time.perf_counter() - started
        tokenizer = self.tokenizer
        # tokens that never carry lexical weight (as in FlagEmbedding)
        self.special_ids = np.array(
            [
                tokenizer.convert_tokens_to_ids(tokenizer.special_tokens_map[name])
                for name in ("cls_token", "eos_token", "pad_token", "unk_token")
                if name in tokenizer.special_tokens_map
            ]
        )
        self.location = location
        self.dense_dimensions = int(config.hidden_size)
        self.vocabulary_size = int(config.vocab_size)
        # XLM-RoBERTa reserves two positions (padding offset), so 8194 allows 8192 tokens
        self.max_positions = int(config.max_position_embeddings) - 2

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(token_id)

    def encode_batch(self, texts: list[str], max_length: int) -> list[Encoding]:
        """Dense vectors and lexical weights of texts from one forward pass
        (FlagEmbedding's dense and sparse heads; ColBERT is not stored)."""
        import torch

        batch = self.tokenizer(
            texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch, return_dict=True).last_hidden_state
            dense = torch.nn.functional.normalize(hidden[:, 0], dim=-1).float().cpu().numpy()
            weights = torch.relu(self.sparse_linear(hidden)).squeeze(-1).float().cpu().numpy()
            del hidden
        ids = batch["input_ids"].cpu().numpy()
        return [
            Encoding(dense[row], _lexical_weights(weights[row], ids[row], self.special_ids))
            for row in range(len(texts))
        ]


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
        model = LoadedModel(settings.dense_model, settings.device, settings.dtype)
    else:
        model = encoders.Pair(
            settings.dense_model, settings.sparse_model, settings.device, settings.dtype
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


def encode(settings, model, texts: list[str], between_batches=lambda: None) -> list[Encoding]:
    """Dense vectors and lexical weights of texts: one forward pass per batch_size
    texts, longest first so that each batch pads little.

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
    if torch.get_num_threads() != settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    max_length = min(settings.max_length, model.max_positions)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    encodings: list[Encoding | None] = [None] * len(texts)
    for start in range(0, len(order), settings.batch_size):
        if start:
            between_batches()
        members = order[start : start + settings.batch_size]
        started = time.perf_counter()
        batch = model.encode_batch([texts[i] for i in members], max_length)
        for i, encoding in zip(members, batch, strict=True):
            encodings[i] = encoding
        stats.encode_seconds += time.perf_counter() - started
        stats.encode_calls += 1
        stats.texts_encoded += len(members)
    release_freed_memory()  # the batches' activations, else kept by glibc for good
    return encodings


QUERY_CACHE_SIZE = 256
_query_cache: OrderedDict = OrderedDict()


def encode_query(settings, model, text: str) -> Encoding:
    """One text, through a per-backend LRU cache: an application repeating a
    query (paging, retries, popular searches) pays the forward pass once."""
    key = (settings.model_key, min(settings.max_length, model.max_positions), text)
    if key in _query_cache:
        _query_cache.move_to_end(key)
        stats.query_cache_hits += 1
        return _query_cache[key]
    (encoding,) = encode(settings, model, [text])
    _query_cache[key] = encoding
    if len(_query_cache) > QUERY_CACHE_SIZE:
        _query_cache.popitem(last=False)
    return encoding
