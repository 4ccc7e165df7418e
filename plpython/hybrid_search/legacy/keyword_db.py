"""The BM25 keyword index's storage in PostgreSQL: rebuilding it and searching it.

Only for a 0.1.0 database until ALTER EXTENSION UPDATE (sql_api says why): from
0.2.0 on the keyword leg is an index scan of documents_fts_bm25_idx.

Mirrors sparse_db: postings in hybrid_search_keyword_postings, a lexeme
dictionary with document frequencies, one segment row with the build's
statistics, and a change list of documents whose fts changed since. Searches
run inside STABLE functions, so all their statements share one snapshot.
"""

import time

import numpy as np

from .. import catalog
from . import index_changes, keyword_index, sparse_index

_plans: dict = {}

# (lexemes, tfs, length) of the query's lexemes in a document's fts
_DOC_TERMS = (
    "cross join lateral (select"
    " pg_catalog.array_agg(u.lexeme) filter (where u.lexeme = any($1)) as lexemes,"
    " pg_catalog.array_agg(coalesce(pg_catalog.cardinality(u.positions), 1))"
    "  filter (where u.lexeme = any($1)) as tfs,"
    " coalesce(sum(coalesce(pg_catalog.cardinality(u.positions), 1)), 0) as length"
    " from pg_catalog.unnest(d.fts) as u) as t"
)
_FILTERS = (
    "($2::jsonb is null or d.metadata @> $2::jsonb)"  # metadata filter
    " and ($3::tsquery is null or d.fts @@ $3::tsquery)"  # websearch match
)


def _plan(plpy, name: str, sql: str, types: list[str]):
    if name not in _plans:
        ours, _ = catalog.schemas(plpy)
        _plans[name] = plpy.prepare(sql.format(s=ours), types)
    return _plans[name]


def _rows(plpy, name, sql, types, args):
    return plpy.execute(_plan(plpy, name, sql, types), args)


def rebuild(plpy, k1: float, b: float) -> dict:
    """Rebuild dictionary, statistics and postings from one snapshot of documents."""
    started = time.perf_counter()
    ours, _ = catalog.schemas(plpy)
    plpy.execute(
        "select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('hybrid_search.keyword'))"
    )
    # the first row carries the snapshot the whole scan runs on
    cursor = plpy.cursor(
        "select pg_catalog.pg_current_snapshot()::text as snap, null::bigint as id,"
        " null::text[] as lexemes, null::int[] as tfs"
        " union all"
        " (select null, d.id, pg_catalog.array_agg(u.lexeme),"
        "  pg_catalog.array_agg(coalesce(pg_catalog.cardinality(u.positions), 1))"
        f" from {ours}.documents as d left join lateral pg_catalog.unnest(d.fts) as u on true"
        "  where d.fts is not null group by d.id)"
    )
    snapshot = cursor.fetch(1)[0]["snap"]

    def rows():
        while batch := cursor.fetch(10000):
            for r in batch:
                # an empty fts comes out of the left join as one NULL lexeme
                pairs = [(x, n) for x, n in zip(r["lexemes"], r["tfs"], strict=True) if x]
                yield r["id"], [x for x, _ in pairs], [n for _, n in pairs]

    built = keyword_index.build(rows(), k1, b)
    cursor.close()

    plpy.execute(f"delete from {ours}.hybrid_search_keyword_postings")
    plpy.execute(f"delete from {ours}.hybrid_search_keyword_lexemes")
    plpy.execute(
        plpy.prepare(
            f"insert into {ours}.hybrid_search_keyword_lexemes"
            " (lexeme, token_id, document_frequency)"
            " select l, i - 1, f from unnest($1::text[], $2::int[]) with ordinality as t (l, f, i)",
            ["text[]", "int[]"],
        ),
        [built.lexemes, built.document_frequency.tolist()],
    )
    insert = plpy.prepare(
        f"insert into {ours}.hybrid_search_keyword_postings"
        " (token_id, block, max_weight, doc_ids, weights)"
        " select * from unnest($1::int[], $2::int[], $3::real[], $4::bytea[], $5::bytea[])",
        ["int[]", "int[]", "real[]", "bytea[]", "bytea[]"],
    )
    for start in range(0, len(built.blocks), 5000):
        chunk = built.blocks[start : start + 5000]
        plpy.execute(
            insert,
            [
                [x.token_id for x in chunk],
                [x.block for x in chunk],
                [x.max_weight for x in chunk],
                [x.doc_ids for x in chunk],
                [x.weights for x in chunk],
            ],
        )
    index_changes.forget_seen(plpy, f"{ours}.hybrid_search_keyword_changes", snapshot)
    seconds = time.perf_counter() - started
    plpy.execute(
        plpy.prepare(
            f"insert into {ours}.hybrid_search_keyword_segment as s (built_at, built_snapshot,"
            " documents, avg_length, k1, b, lexemes, postings, max_doc_id, doc_id_bytes,"
            " build_seconds)"
            " values (pg_catalog.clock_timestamp(), $1::pg_snapshot, $2, $3, $4, $5, $6, $7, $8,"
            " $9, $10)"
            " on conflict (singleton) do update set built_at = excluded.built_at,"
            " built_snapshot = excluded.built_snapshot, documents = excluded.documents,"
            " avg_length = excluded.avg_length, k1 = excluded.k1, b = excluded.b,"
            " lexemes = excluded.lexemes, postings = excluded.postings,"
            " max_doc_id = excluded.max_doc_id, doc_id_bytes = excluded.doc_id_bytes,"
            " build_seconds = excluded.build_seconds",
            ["text", "bigint", *["float8"] * 3, "bigint", "bigint", "bigint", "int", "float8"],
        ),
        [
            snapshot,
            built.documents,
            built.avg_length,
            k1,
            b,
            len(built.lexemes),
            built.postings,
            built.max_doc_id,
            built.doc_id_bytes,
            seconds,
        ],
    )
    return {"documents": built.documents, "postings": built.postings, "seconds": seconds}


def _query_lexemes(plpy, config: str, query: str) -> dict[str, int]:
    """{lexeme: repetitions} of the query under the text search configuration."""
    try:
        rows = _rows(
            plpy,
            "query_lexemes",
            "select u.lexeme, coalesce(pg_catalog.cardinality(u.positions), 1) as n"
            " from pg_catalog.unnest(pg_catalog.to_tsvector($1::regconfig, $2)) as u",
            ["text", "text"],
            [config, query],
        )
    except plpy.spiexceptions.ProgramLimitExceeded as error:
        plpy.error(
            f"keyword_search: a query of {len(query)} characters makes a tsvector over"
            " PostgreSQL's 1 MB limit",
            detail=str(error),
            hint="shorten the query",
            sqlstate="54000",  # program_limit_exceeded
        )
    return {r["lexeme"]: r["n"] for r in rows}


def _or_query(lexemes) -> str:
    """A tsquery matching any of the lexemes, taken verbatim (no normalisation), as a
    balanced tree of ORs: PostgreSQL parses and evaluates a tsquery recursively, and
    the flat chain 'a' | 'b' | ... of a 30,000-word query exceeded max_stack_depth. A
    balanced tree is log2(n) deep (15 for 30,000 lexemes)."""
    terms = ["'" + x.replace("\\", "\\\\").replace("'", "''") + "'" for x in lexemes]
    while len(terms) > 1:
        terms = [
            f"({terms[i]} | {terms[i + 1]})" if i + 1 < len(terms) else terms[i]
            for i in range(0, len(terms), 2)
        ]
    return terms[0]


def _matching(plpy, name: str, where: str, fourth: str, args: list) -> list:
    """(id, lexemes, tfs, length) of documents selected by `where` ($4) and the filters."""
    return _rows(
        plpy,
        name,
        "select d.id, t.lexemes, t.tfs, t.length from {s}.documents as d "
        + _DOC_TERMS
        + f" where {where} and {_FILTERS}",
        ["text[]", "text", "text", fourth],
        args,
    )


def scan(plpy, config: str, query: str, k: int, filter_json, match) -> list[tuple[int, float]]:
    """Exact BM25 with statistics computed now, by reading every document's fts."""
    query_tf = _query_lexemes(plpy, config, query)
    if not query_tf:
        return []
    lexemes = list(query_tf)
    totals = _rows(
        plpy,
        "scan_totals",
        "select count(*) as n, coalesce(sum(t.length), 0) as total from {s}.documents as d"
        " cross join lateral (select sum(coalesce(pg_catalog.cardinality(u.positions), 1))"
        "  as length from pg_catalog.unnest(d.fts) as u) as t"
        " where d.fts is not null",
        [],
        [],
    )[0]
    dfs = {
        r["lexeme"]: r["df"]
        for r in _rows(
            plpy,
            "scan_dfs",
            "select u.lexeme, count(*) as df"
            " from {s}.documents as d cross join lateral pg_catalog.unnest(d.fts) as u"
            " where u.lexeme = any($1) group by u.lexeme",
            ["text[]"],
            [lexemes],
        )
    }
    documents = int(totals["n"])
    avg_length = float(totals["total"]) / documents if documents else 0.0
    stats = keyword_index.Statistics(documents, avg_length, *bm25_parameters(plpy))
    weights = keyword_index.query_weights(query_tf, dfs, documents)
    docs = _matching(
        plpy, "scan_or", "d.fts @@ $4", "tsquery", [lexemes, filter_json, match, _or_query(lexemes)]
    )
    return _top(docs, weights, stats, k)


def bm25_parameters(plpy) -> tuple[float, float]:
    row = _rows(plpy, "k1_b", "select bm25_k1, bm25_b from {s}.hybrid_search_settings", [], [])[0]
    return row["bm25_k1"], row["bm25_b"]


def _top(docs, weights, stats, k) -> list[tuple[int, float]]:
    scored = [
        (r["id"], keyword_index.score(weights, r["lexemes"], r["tfs"], r["length"], stats))
        for r in docs
        if r["lexemes"]
    ]
    scored.sort(key=lambda t: (-t[1], t[0]))
    return [t for t in scored if t[1] > 0][:k]


def search(plpy, config: str, query: str, k: int, filter_json, match) -> list[tuple[int, float]]:
    """The k best (doc_id, BM25) for the query, from the index when it is built
    and the caller may read it."""
    readable = catalog.can_read(
        plpy,
        [f"hybrid_search_keyword_{t}" for t in ("segment", "postings", "lexemes", "changes")],
    )
    segment = readable and _rows(
        plpy,
        "segment",
        "select documents, avg_length, k1, b, doc_id_bytes, max_doc_id"
        " from {s}.hybrid_search_keyword_segment",
        [],
        [],
    )
    if not segment:  # never built (or emptied, or just restored), or not ours: scan
        return scan(plpy, config, query, k, filter_json, match)
    seg = segment[0]
    stats = keyword_index.Statistics(seg["documents"], seg["avg_length"], seg["k1"], seg["b"])
    query_tf = _query_lexemes(plpy, config, query)
    if not query_tf:
        return []
    lexemes = list(query_tf)
    known = {
        r["lexeme"]: (r["token_id"], r["document_frequency"])
        for r in _rows(
            plpy,
            "dictionary",
            "select lexeme, token_id, document_frequency"
            " from {s}.hybrid_search_keyword_lexemes where lexeme = any($1)",
            ["text[]"],
            [lexemes],
        )
    }
    weights = keyword_index.query_weights(
        query_tf, {x: df for x, (_, df) in known.items()}, stats.documents
    )
    # lexemes the build never saw can still occur in documents written since
    next_id = -1
    token_of = {}
    for lexeme in lexemes:
        if lexeme in known:
            token_of[lexeme] = known[lexeme][0]
        else:
            token_of[lexeme], next_id = next_id, next_id - 1

    def vector(r) -> bytes:
        tf = np.asarray(r["tfs"] or [], float)
        parts = keyword_index.tf_part(tf, np.full(tf.size, float(r["length"])), stats)
        return keyword_index.encode_vector(
            [token_of[x] for x in r["lexemes"] or []], parts.tolist()
        )

    def changed_ids():
        rows = _rows(
            plpy, "changed", "select doc_id from {s}.hybrid_search_keyword_changes", [], []
        )
        return np.array([r["doc_id"] for r in rows], dtype=np.int64)

    def score_changed():
        docs = _matching(
            plpy,
            "fresh",
            "d.id in (select c.doc_id from {s}.hybrid_search_keyword_changes as c) and d.fts @@ $4",
            "tsquery",
            [lexemes, filter_json, match, _or_query(lexemes)],
        )
        return _top(docs, weights, stats, len(docs))

    def fetch_vectors(ids):
        docs = _matching(
            plpy, "vectors", "d.id = any($4)", "bigint[]", [lexemes, filter_json, match, ids]
        )
        return [(r["id"], vector(r)) for r in docs]

    def visible_ids(ids):
        rows = _rows(
            plpy,
            "visible",
            f"select d.id from {{s}}.documents as d where d.id = any($4) and {_FILTERS}",
            ["text[]", "text", "text", "bigint[]"],
            [lexemes, filter_json, match, ids],
        )
        return {r["id"] for r in rows}

    def block_maxima(tokens):
        return [
            (r["token_id"], r["block"], r["max_weight"])
            for r in _rows(
                plpy,
                "maxima",
                "select token_id, block, max_weight from {s}.hybrid_search_keyword_postings"
                " where token_id = any($1)",
                ["int[]"],
                [tokens],
            )
        ]

    def read_blocks(requests):
        rows = _rows(
            plpy,
            "blocks",
            "select p.token_id, p.doc_ids, p.weights"
            " from unnest($1::int[], $2::int[]) as r (token_id, block)"
            " join {s}.hybrid_search_keyword_postings as p"
            " on p.token_id = r.token_id and p.block = r.block",
            ["int[]", "int[]"],
            [[t for t, _ in requests], [b for _, b in requests]],
        )
        return [(r["token_id"], r["doc_ids"], r["weights"]) for r in rows]

    index = sparse_index.Index(
        doc_id_bytes=seg["doc_id_bytes"],
        max_doc_id=seg["max_doc_id"],
        block_maxima=block_maxima,
        read_blocks=read_blocks,
        changed_ids=changed_ids,
        score_changed=score_changed,
        fetch_vectors=fetch_vectors,
        visible_ids=visible_ids,
    )
    query_vector = {token_of[x]: w for x, w in weights.items()}
    filtered = filter_json is not None or match is not None
    return sparse_index.search(index, query_vector, k, filtered=filtered)
