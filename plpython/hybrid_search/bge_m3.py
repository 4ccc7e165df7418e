"""BGE-M3 through FlagEmbedding, the model making dense, sparse and ColBERT
vectors in one forward pass.

FlagEmbedding loads the model (BGEM3FlagModel) and runs its forward pass
(dense, sparse and ColBERT heads). Batching is ours (encoding.encode):
BGEM3FlagModel.encode runs a trial forward pass on every call to pick a batch
size, which doubles the cost of the small calls a database makes, and it
computes nothing we would skip here.
"""

import os
import time

import numpy as np

from . import environment, numerics
from .encoding import Encoding, ModelNotAvailable, release_freed_memory

environment.apply()  # before FlagEmbedding/transformers are imported


class BgeM3:
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
    return isinstance(loaded, BgeM3)


def _lexical_weights(weights: np.ndarray, ids: np.ndarray, special: np.ndarray) -> dict:
    """{"token_id": weight}: each token's largest weight over its positions."""
    keep = (weights > 0) & ~np.isin(ids, special)
    result: dict[str, float] = {}
    for token, weight in zip(ids[keep].tolist(), weights[keep].tolist(), strict=True):
        if weight > result.get(str(token), 0.0):
            result[str(token)] = weight
    return result
