"""BGE-M3 through FlagEmbedding, loaded once per backend and cached.

A backend keeps at most one model: loading costs seconds and, for the real
BGE-M3, gigabytes, so a settings change replaces the cached model instead of
adding a second one.
"""

import os
import time
from dataclasses import dataclass, field

# Set before FlagEmbedding/transformers are imported: no progress bars in the
# server log, and never a download from inside a database transaction.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class ModelNotAvailable(RuntimeError):
    """The configured model cannot be loaded; the message says why."""


@dataclass
class Stats:
    """What this backend has done with the model (hybrid_search_model_stats)."""

    model: str | None = None
    load_seconds: float | None = None
    encode_calls: int = 0
    texts_encoded: int = 0
    encode_seconds: float = 0.0


@dataclass
class Encoding:
    dense: object  # numpy float32 vector
    lexical_weights: dict = field(default_factory=dict)  # {"token_id": weight}


class LoadedModel:
    """A BGEM3FlagModel with the facts the schema needs about it."""

    def __init__(self, location: str, device: str, use_fp16: bool):
        if location.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(location)):
            raise ModelNotAvailable(f"there is no model directory {location}")
        started = time.perf_counter()
        try:
            from FlagEmbedding import BGEM3FlagModel

            self.flag_model = BGEM3FlagModel(location, use_fp16=use_fp16, devices=device)
        except Exception as error:  # any failure to load means the same thing to the caller
            raise ModelNotAvailable(f"{type(error).__name__}: {error}") from error
        self.load_seconds = time.perf_counter() - started
        config = self.flag_model.model.model.config
        self.location = location
        self.dense_dimensions = int(config.hidden_size)
        self.vocabulary_size = int(config.vocab_size)
        # XLM-RoBERTa reserves two positions (padding offset), so 8194 allows 8192 tokens
        self.max_positions = int(config.max_position_embeddings) - 2

    def token_text(self, token_id: int) -> str:
        return self.flag_model.tokenizer.convert_ids_to_tokens(token_id)


_cached: tuple[tuple, LoadedModel] | None = None
stats = Stats()


def get(settings) -> LoadedModel:
    """The model for these settings, loading it (once per backend) if needed."""
    global _cached
    if _cached is not None and _cached[0] == settings.model_key:
        return _cached[1]
    _cached = None  # drop the old model before loading a new one
    model = LoadedModel(settings.model, settings.device, settings.use_fp16)
    _cached = (settings.model_key, model)
    stats.model, stats.load_seconds = settings.model, model.load_seconds
    return model


def encode(
    settings, model: LoadedModel, texts: list[str], between_batches=lambda: None
) -> list[Encoding]:
    """Dense vectors and lexical weights of texts: one model call per batch_size texts.

    between_batches runs before every batch but the first: the server cannot
    interrupt Python code, so this is where a cancel or statement_timeout lands.
    """
    import torch

    if torch.get_num_threads() != settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    max_length = min(settings.max_length, model.max_positions)
    encodings = []
    for start in range(0, len(texts), settings.batch_size):
        if start:
            between_batches()
        batch = texts[start : start + settings.batch_size]
        started = time.perf_counter()
        output = model.flag_model.encode(
            batch,
            batch_size=len(batch),
            max_length=max_length,
            return_dense=True,
            return_sparse=True,
            return_colbert_vecs=False,
        )
        stats.encode_seconds += time.perf_counter() - started
        stats.encode_calls += 1
        stats.texts_encoded += len(batch)
        encodings.extend(
            Encoding(dense, weights)
            for dense, weights in zip(output["dense_vecs"], output["lexical_weights"], strict=True)
        )
    return encodings
