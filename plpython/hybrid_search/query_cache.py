"""The query-embedding cache shared by every backend (hybrid_search_query_cache).

A backend that misses its own LRU cache (encoding.encode_query) asks this table
before running the model, and stores what it computed. Rows are keyed by the
role and a SHA-256 of (model, number format, max_length, text), hold only the
vectors, and row-level security shows each role its own rows
(sql/008_query_cache.sql). Read-only transactions read without counting;
standbys (where an unlogged table cannot be read) skip it. Any error here
(a revoked privilege, say) is contained in a subtransaction: the query is
then embedded as if there were no shared cache.
"""

import hashlib

import numpy as np

from . import catalog
from .encoding import Encoding

PRUNE_EVERY = 256  # entries inserted between two prunes

_plans: dict = {}


def _plan(plpy, name: str):
    if not _plans:
        ours, _ = catalog.schemas(plpy)
        cache = f"{ours}.hybrid_search_query_cache"
        _plans["state"] = plpy.prepare(
            "select pg_catalog.pg_is_in_recovery() as recovery,"
            " pg_catalog.current_setting('transaction_read_only')::boolean as read_only"
        )
        _plans["get"] = plpy.prepare(
            "select c.dense, c.lexical, case when not $2"
            f" then {ours}._query_cache_count(true) end as counted"
            f" from {cache} as c where c.role_name = current_user and c.key = $1",
            ["bytea", "boolean"],
        )
        # a volatile function: the embedding functions are stable, and their own
        # statements may not write
        _plans["put"] = plpy.prepare(
            f"select {ours}._query_cache_put($1, $2, $3, $4) as entry",
            ["bytea", "bytea", "bytea", "integer"],
        )
        _plans["prune"] = plpy.prepare(f"select {ours}._query_cache_prune($1)", ["bigint"])
    return _plans[name]


def key(settings, loaded, max_length: int, text: str) -> bytes:
    digest = hashlib.sha256()
    for part in (settings.dense_model, settings.sparse_model, loaded.dtype, str(max_length), text):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.digest()


def pack_lexical(weights: dict) -> bytes:
    """(token id, weight) pairs as int32 ids followed by float32 weights."""
    ids = np.array([int(t) for t in weights], dtype="<i4")
    values = np.array(list(weights.values()), dtype="<f4")
    return ids.tobytes() + values.tobytes()


def unpack_lexical(data: bytes) -> dict:
    n = len(data) // 8
    ids = np.frombuffer(data, dtype="<i4", count=n)
    values = np.frombuffer(data, dtype="<f4", offset=4 * n)
    return {str(t): w for t, w in zip(ids.tolist(), values.tolist(), strict=True)}


class Shared:
    """get/put of one statement's query embedding in the shared table."""

    def __init__(self, plpy, settings):
        self.plpy, self.settings = plpy, settings
        self.read_only = True
        self.usable = False
        try:
            with plpy.subtransaction():
                (state,) = plpy.execute(_plan(plpy, "state"))
            self.usable, self.read_only = not state["recovery"], state["read_only"]
        except plpy.SPIError:
            pass

    def key(self, loaded, max_length: int, text: str) -> bytes:
        return key(self.settings, loaded, max_length, text)

    def get(self, cache_key: bytes):
        """(dense float32 vector, lexical weights) or None."""
        if not self.usable:
            return None
        try:
            with self.plpy.subtransaction():
                rows = self.plpy.execute(_plan(self.plpy, "get"), [cache_key, self.read_only])
        except self.plpy.SPIError:
            self.usable = False
            return None
        if not rows:
            return None
        row = rows[0]
        dense = np.frombuffer(row["dense"], dtype="<f4").copy()
        return Encoding(dense, unpack_lexical(row["lexical"]))

    def put(self, cache_key: bytes, encoding) -> None:
        if not self.usable or self.read_only:
            return
        lock = int.from_bytes(cache_key[:4], "little", signed=True)  # advisory lock key
        dense = np.asarray(encoding.dense, dtype="<f4").tobytes()
        try:
            with self.plpy.subtransaction():
                rows = self.plpy.execute(
                    _plan(self.plpy, "put"),
                    [cache_key, dense, pack_lexical(encoding.lexical_weights), lock],
                )
                entry = rows[0]["entry"] if rows else None
                if entry is not None and entry % PRUNE_EVERY == 0:
                    self.plpy.execute(_plan(self.plpy, "prune"), [entry])
        except self.plpy.SPIError:
            self.usable = False
