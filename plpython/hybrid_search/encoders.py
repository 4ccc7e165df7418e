"""The registry of encoders (get: the model(s) the settings name, loaded once per
backend and cached), the encoders other than BGE-M3, with plain transformers, and
the pair of encoders that makes a table's dense and sparse legs when they come
from different models.

- dense: a sentence-transformers model (BertModel and friends): mean pooling
  over the attention mask (or the CLS token when its pooling config says so),
  L2-normalised, at most its max_seq_length tokens.
- sparse: a SPLADE model (a masked language model): per vocabulary entry,
  max over tokens of log1p(relu(MLM logit)), special tokens dropped.

Which kind a directory holds is read from its files (kind()).
"""

import json
import os
import time
from pathlib import Path

from . import bge_m3
from .encoding import Encoding, ModelNotAvailable, stats

BGE_M3, DENSE, SPLADE = "bge-m3", "dense", "splade"
SUB_BATCH = 8  # texts per forward pass, sorted by length


def kind(location: str) -> str:
    """bge-m3 (FlagEmbedding's files, or a hub id), splade (a masked LM) or dense."""
    path = Path(os.path.expanduser(location))
    if not path.is_dir() or (path / "sparse_linear.pt").exists():
        return BGE_M3
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return DENSE  # let the loader explain what is missing
    if any(a.endswith("ForMaskedLM") for a in config.get("architectures") or []):
        return SPLADE
    return DENSE


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class _Transformer:
    """A tokenizer and a transformers model in eval mode, and its length limit."""

    def __init__(self, location: str, device: str, auto_class: str):
        import transformers

        started = time.perf_counter()
        self.location = location
        self.device = device
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        self.model = getattr(transformers, auto_class).from_pretrained(location).to(device).eval()
        config = self.model.config
        limit = int(config.max_position_embeddings)
        # sentence-transformers models are trained (and evaluated) at max_seq_length
        limit = min(
            limit,
            _read_json(Path(location) / "sentence_bert_config.json").get("max_seq_length", limit),
        )
        self.max_positions = limit
        self.load_seconds = time.perf_counter() - started

    def batch(self, texts: list[str], max_length: int):
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=min(max_length, self.max_positions),
            return_tensors="pt",
        ).to(self.device)

    def encode_batch(self, texts: list[str], max_length: int) -> list:
        """Encodings in input order, computed in groups of similar length: padding every
        text to the longest of the whole batch would waste most of the work."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list = [None] * len(texts)
        for start in range(0, len(order), SUB_BATCH):
            chunk = order[start : start + SUB_BATCH]
            for i, encoding in zip(
                chunk, self.encode_group([texts[i] for i in chunk], max_length), strict=True
            ):
                out[i] = encoding
        return out


class DenseEncoder(_Transformer):
    def __init__(self, location: str, device: str):
        super().__init__(location, device, "AutoModel")
        pooling = _read_json(Path(location) / "1_Pooling" / "config.json")
        self.cls_pooling = bool(pooling.get("pooling_mode_cls_token"))
        self.dense_dimensions = int(self.model.config.hidden_size)

    def encode_group(self, texts: list[str], max_length: int):
        """Encodings with normalised float32 dense vectors (no lexical weights)."""
        import torch

        inputs = self.batch(texts, max_length)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
        if self.cls_pooling:
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return [Encoding(v) for v in vectors]


class SpladeEncoder(_Transformer):
    def __init__(self, location: str, device: str):
        super().__init__(location, device, "AutoModelForMaskedLM")
        self.vocabulary_size = int(self.model.config.vocab_size)
        self.special_ids = sorted(set(self.tokenizer.all_special_ids))

    def encode_group(self, texts: list[str], max_length: int):
        """Encodings with {"token_id": weight} lexical weights (no dense vector), as BGE-M3's."""
        import torch

        inputs = self.batch(texts, max_length)
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        weights = torch.log1p(torch.relu(logits)) * inputs["attention_mask"].unsqueeze(-1)
        weights = weights.amax(dim=1)
        weights[:, self.special_ids] = 0
        out = []
        for row in weights.float().cpu():
            ids = torch.nonzero(row).flatten()
            pairs = zip(ids.tolist(), row[ids].tolist(), strict=True)
            out.append(Encoding(None, {str(i): float(w) for i, w in pairs}))
        return out

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(token_id)


class Pair:
    """The dense leg from one model and the sparse leg from another; BGE-M3 may
    be either (its other output is then computed and dropped)."""

    def __init__(
        self,
        dense_location: str,
        sparse_location: str,
        device: str,
        dtype: str,
        pack: bool = False,
    ):
        started = time.perf_counter()

        def load(location, wanted):
            found = kind(location)
            if found == BGE_M3:
                return bge_m3.BgeM3(location, device, dtype, pack)
            if found != wanted:
                raise ModelNotAvailable(
                    f"{location} is a {found} model: it cannot make {wanted_leg[wanted]} vectors"
                )
            try:
                return (DenseEncoder if wanted == DENSE else SpladeEncoder)(location, device)
            except Exception as error:
                raise ModelNotAvailable(f"{type(error).__name__}: {error}") from error

        wanted_leg = {DENSE: "dense", SPLADE: "sparse"}
        self.dense = load(dense_location, DENSE)
        self.sparse = load(sparse_location, SPLADE)
        self.location = f"dense={dense_location} sparse={sparse_location}"
        self.dense_dimensions = self.dense.dense_dimensions
        self.vocabulary_size = self.sparse.vocabulary_size
        self.max_positions = min(self.dense.max_positions, self.sparse.max_positions)
        legs = (self.dense, self.sparse)
        flag_model = next((m for m in legs if isinstance(m, bge_m3.BgeM3)), None)
        self.dtype = flag_model.dtype if flag_model else "fp32"
        self.dtype_reason = (
            flag_model.dtype_reason
            if flag_model
            else "sentence-transformers and SPLADE encoders: fp32"
        )
        self.weights = self.location
        self.load_seconds = time.perf_counter() - started

    def token_text(self, token_id: int) -> str:
        return self.sparse.token_text(token_id)

    def encode_batch(self, texts: list[str], max_length: int):
        dense = self.dense.encode_batch(texts, max_length)
        sparse = self.sparse.encode_batch(texts, max_length)
        return [Encoding(d.dense, s.lexical_weights) for d, s in zip(dense, sparse, strict=True)]


_cached: tuple[tuple, "bge_m3.BgeM3 | Pair"] | None = None


def get(settings) -> "bge_m3.BgeM3 | Pair":
    """The model(s) for these settings, loading them (once per backend) if needed:
    BGE-M3 alone when it makes both legs, else a pair of encoders. A backend keeps at
    most one: loading costs seconds and, for the real BGE-M3, gigabytes, so a settings
    change replaces the cached model instead of adding a second one."""
    global _cached
    if _cached is not None and _cached[0] == settings.model_key:
        return _cached[1]
    _cached = None  # drop the old model before loading a new one
    if settings.dense_model == settings.sparse_model and (kind(settings.dense_model) == BGE_M3):
        model = bge_m3.BgeM3(
            settings.dense_model, settings.device, settings.dtype, settings.pack_weights
        )
    else:
        model = Pair(
            settings.dense_model,
            settings.sparse_model,
            settings.device,
            settings.dtype,
            settings.pack_weights,
        )
    _cached = (settings.model_key, model)
    stats.model, stats.load_seconds = settings.embedding_model, model.load_seconds
    return model
