"""hybrid_search_check(): do the derived data agree with documents?

Each check returns (name, status, detail) with status 'ok', 'warning' (works,
but slower or about to need a refresh) or 'error' (results can be wrong or a
row is missing its embedding). Everything is read in the calling statement's
snapshot (the SQL function is STABLE), so concurrent writers do not make the
comparison flicker.
"""

import json
from pathlib import Path

from . import catalog, dependencies, environment

SAMPLE = 10  # ids named in a detail


def _ids(values) -> str:
    values = sorted(int(v) for v in values)
    more = f" and {len(values) - SAMPLE} more" if len(values) > SAMPLE else ""
    return ", ".join(str(v) for v in values[:SAMPLE]) + more


def _query(plpy, sql: str, name: str):
    """sql run with one text parameter: a qualified relation name, never spliced into SQL."""
    return plpy.execute(plpy.prepare(sql, ["text"]), [name])


def _ids_check(name: str, ids: list, problem: str, fix: str, none: str) -> tuple:
    if not ids:
        return (name, "ok", none)
    return (name, "error", f"{len(ids)} {problem} (ids {_ids(ids)}); {fix}")


def run(plpy) -> list[tuple[str, str, str]]:
    ours, _ = catalog.schemas(plpy)
    documents = plpy.execute(f"select count(*) as n from {ours}.documents")[0]["n"]

    def ids(sql):
        return [r["id"] for r in plpy.execute(sql)]

    return [
        *_embeddings(plpy, ours, documents),
        _ids_check(
            "model",
            ids(
                f"select d.id from {ours}.documents as d, {ours}.hybrid_search_settings as s"
                " where d.embedded_at is not null and d.model is distinct from s.embedding_model"
            ),
            "rows were embedded by another model than hybrid_search_settings.embedding_model",
            f"run select {ours}.hybrid_search_reembed()",
            "every embedding comes from the configured model",
        ),
        _ids_check(
            "fts",
            ids(
                f"select d.id from {ours}.documents as d, {ours}.hybrid_search_settings as s"
                " where d.fts is distinct from pg_catalog.to_tsvector(s.text_search_config,"
                " d.content)"
            ),
            "rows have fts different from to_tsvector(text_search_config, content)",
            "rewrite it with UPDATE documents SET content = content WHERE id = ...",
            "fts agrees with content everywhere",
        ),
        _dense_index(plpy, ours),
        *(
            _access_method_index(plpy, ours, *_graph_in_place(plpy, ours, index))
            for index in _ACCESS_METHOD_INDEXES
        ),
        *_filter_indexes(plpy, ours),
        _token_stats(plpy, ours),
        _privileges(plpy, ours),
        _preload(plpy, ours),
        _dependencies(plpy, ours),
        *_shards(plpy, ours),
    ]


def _shards(plpy, ours):
    """On a coordinator, every shard's own checks, its name first (041_coordinator_admin.sql)."""
    return [
        (r["check_name"], r["status"], r["detail"])
        for r in plpy.execute(f"select * from {ours}._coordinator_check()")
    ]


def _dependencies(plpy, ours):
    """Does the configured virtualenv hold exactly the packages of its lock?"""
    venv = plpy.execute(f"select python_venv from {ours}.hybrid_search_settings")[0]["python_venv"]
    lock = Path(venv) / dependencies.LOCK_NAME
    if not lock.is_file():
        return (
            "dependencies",
            "warning",
            f"{venv} has no {dependencies.LOCK_NAME}: it was not installed by"
            " `hybrid-search setup`, so nothing says which versions were tested",
        )
    drift = dependencies.drift(lock.read_text(), environment.site_packages(venv))
    if drift:
        return (
            "dependencies",
            "error",
            f"{len(drift)} packages in {venv} differ from the lock they were tested with: "
            + "; ".join(drift)
            + ". `hybrid-search setup` puts the locked versions back; then restart the server",
        )
    return ("dependencies", "ok", f"{venv} holds exactly the packages of its lock")


def _preload(plpy, ours):
    """Did the postmaster import the model stack, from the configured virtualenv,
    and is what it imported still what the virtualenv holds?"""
    row = plpy.execute(
        "select pg_catalog.current_setting('hybrid_search.preload_venv', true) as venv,"
        " pg_catalog.current_setting('hybrid_search.preloaded', true) as preloaded,"
        " extract(epoch from pg_catalog.pg_postmaster_start_time()) as started,"
        f" (select python_venv from {ours}.hybrid_search_settings) as configured"
    )[0]
    if not row["venv"]:
        return (
            "preload",
            "ok",
            "not preloaded: each embedding backend imports the model stack itself"
            " (shared_preload_libraries = 'hybrid_search' shares it; docs/memory.md: Preloading)",
        )
    if row["preloaded"] is None:
        return (
            "preload",
            "warning",
            "hybrid_search.preload_venv is set, but hybrid_search is not in"
            " shared_preload_libraries: nothing is preloaded",
        )
    if row["preloaded"] != "on":
        error = environment.preload_error() or "the server log says why"
        return (
            "preload",
            "error",
            f"preloading from {row['venv']} failed: {error.strip().splitlines()[-1]};"
            " backends meet the same error when they load the model. Repair the"
            " virtualenv with `hybrid-search setup`, then restart the server",
        )
    if row["venv"].rstrip("/") != row["configured"].rstrip("/"):
        return (
            "preload",
            "warning",
            f"the postmaster preloaded {row['venv']}, but hybrid_search_settings.python_venv"
            f" is {row['configured']}: set one to the other and restart the server",
        )
    if environment.packages_changed_since(row["venv"], float(row["started"])):
        return (
            "preload",
            "warning",
            f"packages in {row['venv']} were installed after the server started, which"
            " still runs the ones it preloaded: restart the server",
        )
    return ("preload", "ok", f"the postmaster preloaded the model stack from {row['venv']}")


def _embeddings(plpy, ours, documents):
    """Rows without an embedding: those no one will ever embed are an error; those
    waiting in the queue are on their way; those in hybrid_search_errors need a look."""
    rows = plpy.execute(
        "select d.id,"
        f" exists (select from {ours}.hybrid_search_queue as q where q.doc_id = d.id) as queued,"
        f" exists (select from {ours}.hybrid_search_errors as e where e.doc_id = d.id) as failed"
        f" from {ours}.documents as d"
        " where d.dense is null or d.sparse is null or d.embedded_at is null"
    )
    lost = [r["id"] for r in rows if not r["queued"] and not r["failed"]]
    queued = [r["id"] for r in rows if r["queued"]]
    failed = [r["id"] for r in rows if r["failed"] and not r["queued"]]
    embedded = documents - len(rows)
    return [
        _ids_check(
            "embeddings",
            lost,
            "rows have no embedding and are neither queued nor in hybrid_search_errors:"
            " nothing will ever embed them",
            f"run select {ours}.hybrid_search_backfill() to queue them, or"
            f" select {ours}.hybrid_search_embed_documents(array[...ids])",
            f"all {documents} rows are embedded"
            if embedded == documents
            else f"{embedded} of {documents} rows are embedded; the others are queued or failed",
        ),
        (
            "embedding_queue",
            "ok",
            f"{len(queued)} rows without an embedding wait in hybrid_search_queue"
            " (hybrid_search_queue_status shows the workers' progress)"
            if queued
            else "no row waits in hybrid_search_queue",
        ),
        (
            "embedding_errors",
            "warning",
            f"{len(failed)} rows failed every embedding attempt (ids {_ids(failed)}):"
            f" see {ours}.hybrid_search_errors, then select {ours}.hybrid_search_retry_errors()",
        )
        if failed
        else ("embedding_errors", "ok", "no row without an embedding is in hybrid_search_errors"),
    ]


def _dense_index(plpy, ours):
    rows = _query(
        plpy,
        "select i.indisvalid as valid, am.amname as method"
        " from pg_catalog.pg_index as i"
        " join pg_catalog.pg_class as c on c.oid = i.indexrelid"
        " join pg_catalog.pg_am as am on am.oid = c.relam"
        " where i.indexrelid = pg_catalog.to_regclass($1)",
        f"{ours}.documents_dense_idx",
    )
    if not rows:
        return ("dense_index", "warning", "no documents_dense_idx: dense_search scans every row")
    if not rows[0]["valid"]:
        return (
            "dense_index",
            "error",
            "documents_dense_idx is invalid (an interrupted build):"
            " run select hybrid_search_create_dense_index()",
        )
    return ("dense_index", "ok", f"documents_dense_idx ({rows[0]['method']}) is valid")


# the indexes of our access methods: check name, index, its access method, column and
# opclass, and the status and consequence of its absence
_ACCESS_METHOD_INDEXES = [
    (
        "sparse_access_method",
        "documents_sparse_idx",
        "sparse_inverted",
        "sparse sparsevec_ip_ops",
        ("warning", "sparse_search scans every row (exact, slower)"),
    ),
    (
        "keyword_access_method",
        "documents_fts_bm25_idx",
        "sparse_inverted",
        "fts tsvector_bm25_ops",
        ("error", "keyword_search fails"),
    ),
    (
        "dense_filter_access_method",
        "documents_dense_filter_idx",
        "dense_flat",
        "dense vector_cosine_ops, metadata jsonb_filter_ops",
        ("warning", "a filtered dense leg walks the HNSW graph past the rows the filter rejects"),
    ),
]


def _graph_in_place(plpy, ours, index):
    """The entry of _ACCESS_METHOD_INDEXES to check: documents_dense_idx for
    documents_dense_filter_idx when hybrid_search_create_dense_index('graph') made it a
    dense_flat index, which then serves filtered dense legs in its place."""
    check_name, name, method, definition, missing = index
    if name != "documents_dense_filter_idx":
        return index
    graph = _query(
        plpy,
        "select from pg_catalog.pg_class as c join pg_catalog.pg_am as am on am.oid = c.relam"
        " where c.oid = pg_catalog.to_regclass($1) and am.amname = 'dense_flat'",
        f"{ours}.documents_dense_idx",
    )
    return (check_name, "documents_dense_idx", method, definition, missing) if graph else index


def _access_method_index(plpy, ours, check_name, index, method, definition, missing):
    """An index of our access methods against documents, by its check function:
    sparse_inverted_check() for documents_sparse_idx (sparse_search) and
    documents_fts_bm25_idx (keyword_search): structure, every visible row indexed with
    exactly its weights (or lexemes' tf and length), every other indexed row a dead or
    uncommitted one, and the BM25 statistics those of the rows it holds;
    dense_flat_check() for documents_dense_filter_idx (a filtered dense leg): every
    visible row's codes within their bound of its vector."""
    name = f"{ours}.{index}"
    rows = _query(
        plpy,
        "select i.indisvalid as valid from pg_catalog.pg_index as i"
        " where i.indexrelid = pg_catalog.to_regclass($1)",
        name,
    )
    if not rows:
        columns = ", ".join(
            f"{column} {ours}.{opclass}"
            for column, opclass in (c.split() for c in definition.split(", "))
        )
        status, consequence = missing
        return (
            check_name,
            status,
            f"no {index}: {consequence}; create it with: create index {index}"
            f" on {ours}.documents using {method} ({columns})",
        )
    if not rows[0]["valid"]:
        return (
            check_name,
            "error",
            f"{index} is invalid (an interrupted build): reindex index {name}",
        )
    report = json.loads(
        _query(plpy, f"select {ours}.{method}_check($1::regclass) as r", name)[0]["r"]
    )
    if not report["consistent"]:
        return (
            check_name,
            "error",
            f"{index} disagrees with documents ({report['problem_count']} problems:"
            f" {'; '.join(report['problems'][:SAMPLE])}): reindex index {name}",
        )
    if method == "sparse_inverted":
        held = f"{report['merged_rows']} merged, {report['pending_rows']} pending"
    else:
        held = f"{report['dead_rows']} marked dead"
        if report["graph_degree"] > 0:  # rows a walk scores one by one until VACUUM links them
            held += f", {report['graph_tail_rows']} not yet linked into its graph"
    return (
        check_name,
        "ok",
        f"{index} agrees with documents: {report['visible_rows']} rows"
        f" ({held}, {report['rows_not_visible']} dead or uncommitted awaiting VACUUM)",
    )


def _filter_indexes(plpy, ours):
    """The copies hybrid_search_create_filter_indexes made (partial indexes of documents
    named documents_<index>_<name>_idx): each valid (a CONCURRENTLY build that failed
    leaves an invalid one, written by every write and never scanned), and each
    sparse_inverted or dense_flat one agreeing with the rows its predicate admits."""
    copies = _query(
        plpy,
        "select c.relname as name, i.indisvalid as valid, am.amname as method"
        " from pg_catalog.pg_index as i"
        " join pg_catalog.pg_class as c on c.oid = i.indexrelid"
        " join pg_catalog.pg_am as am on am.oid = c.relam"
        " where i.indrelid = $1::regclass and i.indpred is not null"
        " and c.relname ~ '^documents_(dense|sparse|fts_bm25)_[a-z0-9_]+_idx$'"
        " order by c.relname",
        f"{ours}.documents",
    )
    checks = []
    for copy in copies:
        check_name = f"filter_index {copy['name']}"
        if copy["method"] in ("sparse_inverted", "dense_flat"):
            checks.append(
                _access_method_index(
                    plpy, ours, check_name, copy["name"], copy["method"], None, None
                )
            )
        elif copy["valid"]:
            checks.append((check_name, "ok", f"{copy['name']} ({copy['method']}) is valid"))
        else:
            checks.append((
                check_name,
                "error",
                f"{copy['name']} is invalid (an interrupted build):"
                f" reindex index {ours}.{copy['name']}",
            ))  # fmt: skip
    return checks


def _token_stats(plpy, ours):
    populated = _query(
        plpy,
        "select c.relispopulated as p from pg_catalog.pg_class as c where c.oid = $1::regclass",
        f"{ours}.hybrid_search_token_stats",
    )[0]["p"]
    if not populated:
        return (
            "token_stats",
            "warning",
            "hybrid_search_token_stats is not populated: run select hybrid_search_refresh()",
        )
    differ = plpy.execute(
        "select count(*) as n from ("
        f" select * from {ours}._token_stats_rows()) as i"
        f" full join {ours}.hybrid_search_token_stats as s on s.token_id = i.token_id"
        " where s.document_frequency is distinct from i.document_frequency"
        " or s.max_weight is distinct from i.max_weight"
    )[0]["n"]
    if differ:
        return (
            "token_stats",
            "ok",
            f"{differ} tokens changed since the last refresh: select hybrid_search_refresh()"
            " brings the figures up to date",
        )
    return ("token_stats", "ok", "hybrid_search_token_stats agrees with documents.sparse")


def _privileges(plpy, ours):
    """With row-level security on documents, nobody it applies to may read the index."""
    rows = _query(
        plpy,
        "select pg_catalog.string_agg(distinct r.rolname, ', ' order by r.rolname) as roles"
        " from pg_catalog.pg_class as d, pg_catalog.pg_roles as r,"
        f" pg_catalog.unnest({ours}._sparse_index_relations()) as x (rel)"
        " where d.oid = $1::regclass and d.relrowsecurity"
        # predefined roles such as pg_read_all_data read everything by design
        " and not r.rolsuper and not r.rolbypassrls and r.rolname !~ '^pg_'"
        " and not pg_catalog.pg_has_role(r.oid, d.relowner, 'USAGE')"
        " and pg_catalog.has_table_privilege(r.oid, x.rel, 'select')",
        f"{ours}.documents",
    )
    if rows[0]["roles"]:
        return (
            "privileges",
            "error",
            f"row-level security is enabled on documents, but {rows[0]['roles']} can read"
            " the sparse index or hybrid_search_token_stats, which show every row's token"
            " weights: hybrid_search_grant() them again, which revokes the index from roles"
            " under row-level security",
        )
    return ("privileges", "ok", "no role under row-level security can read the sparse index")
