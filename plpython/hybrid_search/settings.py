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
    pack_weights: bool = False  # bf16 weights reordered for oneDNN, private to each backend

    @property
    def threads_for_queries(self) -> int:
        """query_threads, or with 0 the cores nothing else is running on right now."""
        return self.query_threads or idle_cores()

    @property
    def model_key(self) -> tuple:
        """What identifies a loaded model: changing any of these needs a reload."""
        return (self.dense_model, self.sparse_model, self.device, self.dtype, self.pack_weights)


def idle_cores(loadavg: str | None = None, cores: int | None = None) -> int:
    """Cores nobody else uses at this instant (at least 1): the server's cores less the
    tasks running now (/proc/loadavg's fourth field, this one excluded). Instantaneous,
    so a query's own threads, asleep between queries, do not count against the next."""
    import os

    cores = cores or len(os.sched_getaffinity(0))
    try:
        if loadavg is None:
            with open("/proc/loadavg") as f:
                loadavg = f.read()
        running = int(loadavg.split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 1
    return max(1, min(cores, cores - (running - 1)))


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
