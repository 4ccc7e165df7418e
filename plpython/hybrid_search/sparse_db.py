"""The sparse index's storage in PostgreSQL: rebuilding it and reading it.

Statements are prepared once per backend. Reads run inside STABLE functions,
so every statement of one search sees the same snapshot: the postings, the
change list and the documents always agree.
"""

import time

import numpy as np

from . import catalog, index_changes, sparse_index

_plans: dict = {}

# Blocks of common tokens are read by most queries; a backend keeps up to
# CACHE_BYTES of them, for as long as the postings it read them from stand.
CACHE_BYTES = 64 * 2**20
COMMON_TOKEN_BLOCKS = 2  # tokens in over 1,024 documents are cached


class _BlockCache:
    def __init__(self):
        self.segment = None
        self.blocks: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self.size = 0

    def for_segment(self, segment: tuple) -> "_BlockCache":
        if segment != self.segment:  # a rebuild replaced every block
            self.segment, self.blocks, self.size = segment, {}, 0
        return self

    def keep(self, token: int, block: int, ids: bytes, weights: bytes) -> None:
        if self.size + len(ids) + len(weights) <= CACHE_BYTES:
            self.blocks[(token, block)] = (ids, weights)
            self.size += len(ids) + len(weights)


_cache = _BlockCache()


def _plan(plpy, name: str, sql: str, types: list[str]):
    if name not in _plans:
        ours, vector = catalog.schemas(plpy)
        _plans[name] = plpy.prepare(sql.format(s=ours, v=vector), types)
    return _plans[name]


def rebuild(plpy) -> dict:
    """Rebuild the postings from one snapshot of documents; returns what was built."""
    started = time.perf_counter()
    ours, vector = catalog.schemas(plpy)
    plpy.execute(
        "select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('hybrid_search.sparse'))"
    )
    # the first row carries the snapshot the whole scan runs on
    cursor = plpy.cursor(
        "select pg_catalog.pg_current_snapshot()::text as snap,"
        " null::bigint as id, null::bytea as v"
        " union all"
        f" (select null, d.id, {vector}.sparsevec_send(d.sparse) from {ours}.documents as d"
        "  where d.sparse is not null)"
    )
    snapshot = cursor.fetch(1)[0]["snap"]
    parts, documents = [], 0
    while batch := cursor.fetch(10000):
        parts.append(sparse_index.Postings.from_vectors((r["id"], r["v"]) for r in batch))
        documents += len(batch)
    cursor.close()
    postings = (
        sparse_index.Postings(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("doc_ids", "token_ids", "weights")
            )
        )
        if parts
        else sparse_index.Postings.from_vectors([])
    )
    doc_id_bytes, blocks = sparse_index.build_blocks(postings)

    plpy.execute(f"delete from {ours}.hybrid_search_sparse_postings")
    insert = plpy.prepare(
        f"insert into {ours}.hybrid_search_sparse_postings"
        " (token_id, block, max_weight, doc_ids, weights)"
        " select * from unnest($1::int[], $2::int[], $3::real[], $4::bytea[], $5::bytea[])",
        ["int[]", "int[]", "real[]", "bytea[]", "bytea[]"],
    )
    for start in range(0, len(blocks), 5000):
        chunk = blocks[start : start + 5000]
        plpy.execute(
            insert,
            [
                [b.token_id for b in chunk],
                [b.block for b in chunk],
                [b.max_weight for b in chunk],
                [b.doc_ids for b in chunk],
                [b.weights for b in chunk],
            ],
        )
    index_changes.forget_seen(plpy, f"{ours}.hybrid_search_sparse_changes", snapshot)
    seconds = time.perf_counter() - started
    max_doc_id = int(postings.doc_ids.max()) if postings.doc_ids.size else 0
    plpy.execute(
        plpy.prepare(
            f"insert into {ours}.hybrid_search_sparse_segment as s"
            " (built_at, built_snapshot, documents, postings, max_doc_id, doc_id_bytes,"
            " build_seconds)"
            # clock_timestamp: two rebuilds in one transaction stay distinct
            " values (pg_catalog.clock_timestamp(), $1::pg_snapshot, $2, $3, $4, $5, $6)"
            " on conflict (singleton) do update set built_at = excluded.built_at,"
            " built_snapshot = excluded.built_snapshot, documents = excluded.documents,"
            " postings = excluded.postings, max_doc_id = excluded.max_doc_id,"
            " doc_id_bytes = excluded.doc_id_bytes, build_seconds = excluded.build_seconds",
            ["text", "bigint", "bigint", "bigint", "int", "float8"],
        ),
        [snapshot, documents, int(postings.doc_ids.size), max_doc_id, doc_id_bytes, seconds],
    )
    return {"documents": documents, "postings": int(postings.doc_ids.size), "seconds": seconds}


def parse_query(text: str) -> dict[int, float]:
    """{token_id: weight} from a sparsevec's text form (1-based indices)."""
    body = text.partition("/")[0].strip("{}")
    if not body:
        return {}
    return {int(i) - 1: float(w) for i, w in (entry.split(":") for entry in body.split(","))}


def search(plpy, query_text: str, k: int, filter_json: str | None) -> list[tuple[int, float]]:
    """The k best (doc_id, score) for a sparse query, from the index when it is built
    and the caller may read it."""
    readable = catalog.can_read(
        plpy, [f"hybrid_search_sparse_{t}" for t in ("segment", "postings", "changes")]
    )
    segment = readable and plpy.execute(
        _plan(
            plpy,
            "segment",
            "select doc_id_bytes, max_doc_id, built_at::text, built_snapshot::text"
            " from {s}.hybrid_search_sparse_segment",
            [],
        )
    )
    if not segment:  # never built (or emptied, or just restored), or not ours: scan exactly
        rows = plpy.execute(
            _plan(
                plpy,
                "scan",
                "select id, score from {s}.sparse_search_scan($1::{v}.sparsevec, $2, $3::jsonb)",
                ["text", "int", "text"],
            ),
            [query_text, k, filter_json],
        )
        return [(r["id"], r["score"]) for r in rows]

    def rows(name, sql, types, args):
        return plpy.execute(_plan(plpy, name, sql, types), args)

    cache = _cache.for_segment((segment[0]["built_at"], segment[0]["built_snapshot"]))
    blocks_per_token: dict[int, int] = {}

    def block_maxima(tokens):
        found = [
            (r["token_id"], r["block"], r["max_weight"])
            for r in rows(
                "maxima",
                "select token_id, block, max_weight from {s}.hybrid_search_sparse_postings"
                " where token_id = any($1)",
                ["int[]"],
                [tokens],
            )
        ]
        for token, _, _ in found:
            blocks_per_token[token] = blocks_per_token.get(token, 0) + 1
        return found

    def read_blocks(requests):
        hits = [(t, *cache.blocks[(t, b)]) for t, b in requests if (t, b) in cache.blocks]
        missing = [(t, b) for t, b in requests if (t, b) not in cache.blocks]
        if not missing:
            return hits
        fetched = rows(
            "blocks",
            "select p.token_id, p.block, p.doc_ids, p.weights"
            " from unnest($1::int[], $2::int[]) as r (token_id, block)"
            " join {s}.hybrid_search_sparse_postings as p"
            " on p.token_id = r.token_id and p.block = r.block",
            ["int[]", "int[]"],
            [[t for t, _ in missing], [b for _, b in missing]],
        )
        for r in fetched:
            if blocks_per_token.get(r["token_id"], 0) >= COMMON_TOKEN_BLOCKS:
                cache.keep(r["token_id"], r["block"], r["doc_ids"], r["weights"])
        return hits + [(r["token_id"], r["doc_ids"], r["weights"]) for r in fetched]

    index = sparse_index.Index(
        doc_id_bytes=segment[0]["doc_id_bytes"],
        max_doc_id=segment[0]["max_doc_id"],
        block_maxima=block_maxima,
        read_blocks=read_blocks,
        changed_ids=lambda: np.array(
            [
                r["doc_id"]
                for r in rows(
                    "changed", "select doc_id from {s}.hybrid_search_sparse_changes", [], []
                )
            ],
            dtype=np.int64,
        ),
        score_changed=lambda: [
            (r["id"], r["score"])
            for r in rows(
                "fresh",
                "select d.id, -(d.sparse operator({v}.<#>) $1::{v}.sparsevec) as score"
                " from {s}.hybrid_search_sparse_changes as c"
                " join {s}.documents as d on d.id = c.doc_id"
                " where d.sparse operator({v}.<#>) $1::{v}.sparsevec < 0"
                " and ($2::jsonb is null or d.metadata @> $2::jsonb)",
                ["text", "text"],
                [query_text, filter_json],
            )
        ],
        fetch_vectors=lambda ids: [
            (r["id"], r["v"])
            for r in rows(
                "vectors",
                "select d.id, {v}.sparsevec_send(d.sparse) as v from {s}.documents as d"
                " where d.id = any($1) and d.sparse is not null"
                " and ($2::jsonb is null or d.metadata @> $2::jsonb)",
                ["bigint[]", "text"],
                [ids, filter_json],
            )
        ],
        visible_ids=lambda ids: {
            r["id"]
            for r in rows(
                "visible",
                "select d.id from {s}.documents as d"
                " where d.id = any($1) and ($2::jsonb is null or d.metadata @> $2::jsonb)",
                ["bigint[]", "text"],
                [ids, filter_json],
            )
        },
    )
    return sparse_index.search(index, parse_query(query_text), k, filtered=filter_json is not None)
