"""Settings for model tests outside the database: only this object is a stand-in
(the database reads hybrid_search_settings); the models are real."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSettings:
    model: str
    device: str = "cpu"
    dtype: str = "fp32"
    batch_size: int = 4
    max_length: int = 512
    num_threads: int = 1
    max_content_chars: int = 1_000_000
    colbert_store: bool = False
    query_threads: int = 1
    query_cache_entries: int = 0
    pack_weights: bool = False

    @property
    def threads_for_queries(self):
        return self.query_threads

    @property
    def dense_model(self):
        return self.model

    sparse_model = embedding_model = dense_model

    @property
    def model_key(self):
        return (self.model, self.model, self.device, self.dtype, self.pack_weights)
