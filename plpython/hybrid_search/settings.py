"""The extension's settings, read from hybrid_search_settings with one SPI query."""

from dataclasses import dataclass

from . import catalog

_statement = None


@dataclass(frozen=True)
class Settings:
    model: str
    device: str
    dtype: str
    batch_size: int
    max_length: int
    num_threads: int
    max_content_chars: int
    dense_model: str
    sparse_model: str
    embedding_model: str  # what documents.model records
    colbert_store: bool = False  # writes store ColBERT vectors (BGE-M3 only)

    @property
    def model_key(self) -> tuple:
        """What identifies a loaded model: changing any of these needs a reload."""
        return (self.dense_model, self.sparse_model, self.device, self.dtype)


def read(plpy) -> Settings:
    """Current settings (one prepared query per call)."""
    global _statement
    if _statement is None:
        schema, _ = catalog.schemas(plpy)
        _statement = plpy.prepare(
            "select model, device, dtype, batch_size, max_length, num_threads, max_content_chars,"
            " dense_model, sparse_model, embedding_model, colbert_store"
            f" from {schema}.hybrid_search_settings"
        )
    row = plpy.execute(_statement)[0]
    return Settings(**row)
