"""The extension's settings, read from hybrid_search_settings with one SPI query."""

from dataclasses import dataclass, fields

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
    query_threads: int = 0  # torch threads for a query embedding; 0: every core
    query_cache_entries: int = 0  # entries of the shared query cache; 0: not used

    @property
    def threads_for_queries(self) -> int:
        import os

        return self.query_threads or len(os.sched_getaffinity(0))

    @property
    def model_key(self) -> tuple:
        """What identifies a loaded model: changing any of these needs a reload."""
        return (self.dense_model, self.sparse_model, self.device, self.dtype)


def read(plpy) -> Settings:
    """Current settings (one prepared query per call)."""
    global _statement
    if _statement is None:
        schema, _ = catalog.schemas(plpy)
        _statement = plpy.prepare(f"select * from {schema}.hybrid_search_settings")
    row = plpy.execute(_statement)[0]
    # a database whose extension is older than this module (new files installed, ALTER
    # EXTENSION ... UPDATE not run yet) lacks the newest settings: they keep their defaults
    return Settings(**{f.name: row[f.name] for f in fields(Settings) if f.name in row})
