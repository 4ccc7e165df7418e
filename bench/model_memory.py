"""Full-size BGE-M3 inside PostgreSQL: cold start, memory per backend, query
embedding and bulk-write throughput, each next to a plain Python process.

Weights cannot be downloaded here and cost does not depend on their values,
so this uses a random model with BGE-M3's exact configuration (24 layers,
hidden 1024, vocabulary 250,002, sparse and ColBERT heads), generated once
into $HYBRID_SEARCH_HOME/models/random-bge-m3-full (2.2 GB). Runs a throwaway
cluster. The plain Python process runs FlagEmbedding in this interpreter (the
repository's .venv). Usage (after
`make test` or `hybrid-search setup`):

    .venv/bin/python bench/model_memory.py [--backends 1,4,16] [--passages 32]
        [--model DIR] [--dtype bf16] [--latency-only]

--model uses an existing full-size model directory instead of generating one
(with --dtype bf16, DIR-bf16 is used if it exists, else a converted copy is
written under $HYBRID_SEARCH_HOME/models).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from common import QUERY, first_calls, print_table, rollup, scratch_database
from hybrid_search_installer.layout import Layout
from hybrid_search_tools.random_model import generate

SENTENCE = (
    "The autovacuum launcher wakes every naptime seconds and starts a worker for each database "
    "whose tables crossed their thresholds of dead tuples or inserted rows since the last pass. "
)

# a plain Python process: the same model and texts, FlagEmbedding's own encode
PLAIN = """
import json, sys, time
started = time.perf_counter()
from FlagEmbedding import BGEM3FlagModel
model = BGEM3FlagModel(sys.argv[1], use_fp16=False, devices="cpu")
loaded = time.perf_counter()
model.encode([sys.argv[2]], return_sparse=True)
first = time.perf_counter()
texts = json.loads(sys.argv[3])
t = time.perf_counter()
out = model.encode(texts, batch_size=int(sys.argv[4]), return_sparse=True)
encode = time.perf_counter() - t
def kb(field):
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
print(json.dumps({
    "load_s": loaded - started, "first_s": first - started, "encode_s": encode,
    "pss_mb": kb("Pss") / 1024, "private_mb": (kb("Private_Clean") + kb("Private_Dirty")) / 1024,
    "dense": [v.tolist() for v in out["dense_vecs"]],
    "sparse": [{k: float(w) for k, w in d.items()} for d in out["lexical_weights"]],
}))
"""


def passages(model_dir: Path, count: int, tokens: int = 200) -> list[str]:
    """count distinct texts of about `tokens` tokens under the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    text = SENTENCE
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += SENTENCE
    return [f"{i}: {text}" for i in range(count)]


def plain_python(model_dir: Path, texts: list[str], batch_size: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            PLAIN,
            str(model_dir),
            QUERY,
            json.dumps(texts),
            str(batch_size),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "2"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_starts(dsn: str, n: int) -> tuple[list[float], dict]:
    """n new backends embed a query at once: their first-call times and memory."""
    conns, times = first_calls(dsn, n)
    pids = [c.execute("select pg_backend_pid()").fetchone()[0] for c in conns]
    rows = (
        conns[0]
        .execute(
            "select pss_mb, private_mb, rss_mb from hybrid_search_backend_memory()"
            " where pid = any(%s)",
            [pids],
        )
        .fetchall()
    )
    anonymous = [rollup(pid)["Anonymous"] for pid in pids]
    for c in conns:
        c.close()
    return times, {
        "anonymous_mean_mb": statistics.mean(anonymous),
        "pss_total_mb": sum(r[0] for r in rows),
        "private_mean_mb": statistics.mean(r[1] for r in rows),
        "rss_mean_mb": statistics.mean(r[2] for r in rows),
    }


def query_latency(dsn: str, query: str, repeats: int) -> tuple[list[float], float]:
    """Seconds per query embedding in a warm backend (distinct texts: no cache hit),
    and for the repeat of one of them (the per-backend query cache)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select embed_dense('warm up')")
        lat = []
        for i in range(repeats):
            t = time.perf_counter()
            # distinct texts of the same length: a different first word, no cache hit
            conn.execute(
                "select embed_dense(%s)", [f"{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[i % 26]} {query}"]
            )
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        conn.execute("select embed_dense(%s)", [f"C {query}"])
        return lat, time.perf_counter() - t


def bulk_write(dsn: str, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Seconds for an INSERT ... SELECT of texts, embedded by the trigger in one
    transaction, and the anonymous memory (MB) of the writing backend afterwards."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select hybrid_search_configure(batch_size => %s)", [batch_size])
        conn.execute("select embed_dense('warm up')")
        conn.execute("truncate documents")
        started = time.perf_counter()
        conn.execute("insert into documents (content) select unnest(%s::text[])", [texts])
        seconds = time.perf_counter() - started
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        return seconds, rollup(pid)["Anonymous"]


def copy_vectors(dsn: str, texts: list[str], result: dict) -> float:
    """Seconds to COPY texts with the vectors a client computed (embedding triggers skip them)."""
    from pgvector import SparseVector

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("truncate documents")
        dim = conn.execute(
            "select atttypmod from pg_attribute"
            " where attrelid = 'documents'::regclass and attname = 'sparse'"
        ).fetchone()[0]
        started = time.perf_counter()
        with conn.cursor().copy("copy documents (content, dense, sparse) from stdin") as copy:
            for text, dense, sparse in zip(texts, result["dense"], result["sparse"], strict=True):
                sv = SparseVector({int(k): w for k, w in sparse.items()}, dim)
                copy.write_row([text, "[" + ",".join(map(str, dense)) + "]", sv.to_text()])
        return time.perf_counter() - started


def numeric_formats(dsn: str, texts: list[str]) -> list[tuple[str, str]]:
    """Throughput of each dtype on the same passages, and agreement with fp32:
    cosine of dense vectors, weighted overlap of lexical weights."""
    import numpy as np

    rows, reference = [], None
    for dtype in ("fp32", "bf16", "int8"):  # each loaded from the served weights
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("select hybrid_search_configure(dtype => %s)", [dtype])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select embed_dense('warm up')")
            started = time.perf_counter()
            out = conn.execute(
                "select dense::text, sparse_to_jsonb(sparse) from embed_batch(%s) order by ord",
                [texts],
            ).fetchall()
            seconds = time.perf_counter() - started
        dense = np.array([json.loads(d) for d, _ in out])
        sparse = [{k: float(v) for k, v in s.items()} for _, s in out]
        if reference is None:
            reference = (dense, sparse)
        cosine = float(np.min(np.sum(dense * reference[0], axis=1)))
        overlaps = []
        for mine, ref in zip(sparse, reference[1], strict=True):
            keys = mine.keys() | ref.keys()
            low = sum(min(mine.get(t, 0.0), ref.get(t, 0.0)) for t in keys)
            high = sum(max(mine.get(t, 0.0), ref.get(t, 0.0)) for t in keys)
            overlaps.append(low / high if high else 1.0)
        rows.append(
            (
                f"dtype {dtype}: {len(texts)} passages, passages/s; min dense cosine vs fp32;"
                " mean lexical-weight overlap vs fp32",
                f"{len(texts) / seconds:.2f}; {cosine:.4f}; {statistics.mean(overlaps):.3f}",
            )
        )
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("select hybrid_search_configure(dtype => 'fp32')")
    return rows


def _served_model(layout: Layout, model_dir: Path, dtype: str, rows: list) -> Path:
    """The directory the server loads: model_dir, or its weights converted to dtype."""
    if dtype == "fp32":
        return model_dir
    existing = model_dir.with_name(f"{model_dir.name}-{dtype}")
    if (existing / "config.json").exists():
        return existing
    from hybrid_search.convert import convert

    started = time.perf_counter()
    served = convert(model_dir, layout.models / f"{model_dir.name}-{dtype}", dtype)
    rows.append(
        (f"convert the weights to {dtype} (once), s", f"{time.perf_counter() - started:.1f}")
    )
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="1,4,16")
    parser.add_argument("--passages", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10, help="query embeddings timed")
    parser.add_argument("--query", default=QUERY, help="the query whose embedding is timed")
    parser.add_argument("--model", type=Path, help="an existing full-size model directory")
    parser.add_argument(
        "--dtype", default="fp32", help="server dtype; other than fp32, weights are converted first"
    )
    parser.add_argument("--skip-formats", action="store_true", help="skip the dtype comparison")
    parser.add_argument(
        "--latency-only", action="store_true", help="only the query embedding latency"
    )
    args = parser.parse_args()
    layout = Layout.from_environment()
    rows = []
    if args.model:
        model_dir = args.model
    else:
        started = time.perf_counter()
        model_dir = generate(layout.models / "random-bge-m3-full", size="full", seed=0)
        rows.append(
            (
                "generate the full-size random model (once), s",
                f"{time.perf_counter() - started:.1f}",
            )
        )
    served = _served_model(layout, model_dir, args.dtype, rows)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    query_tokens = len(tokenizer(f"C {args.query}")["input_ids"])
    texts = [] if args.latency_only else passages(model_dir, args.passages)
    plain = None if args.latency_only else plain_python(model_dir, texts, args.batch_size)
    with scratch_database(layout, str(served), "max_connections = 40\n") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "select hybrid_search_configure(num_threads => 2, dtype => %s)", [args.dtype]
            )
        if plain:
            rows.append(("plain Python: import + load, s", f"{plain['load_s']:.2f}"))
            rows.append(("plain Python: import + load + first query, s", f"{plain['first_s']:.2f}"))
            rows.append(
                (
                    "plain Python: PSS / private memory, MB",
                    f"{plain['pss_mb']:.0f} / {plain['private_mb']:.0f}",
                )
            )
        for n in [] if args.latency_only else (int(x) for x in args.backends.split(",")):
            times, memory = cold_starts(dsn, n)
            rows.append(
                (
                    f"{n} backends at once: first embed_dense, median / max s",
                    f"{statistics.median(times):.2f} / {max(times):.2f}",
                )
            )
            rows.append((f"{n} backends: PSS total, MB", f"{memory['pss_total_mb']:.0f}"))
            rows.append(
                (
                    f"{n} backends: private per backend (mean), MB; of which anonymous",
                    f"{memory['private_mean_mb']:.0f}; {memory['anonymous_mean_mb']:.0f}",
                )
            )
        lat, cached = query_latency(dsn, args.query, args.repeats)
        rows.append(
            (
                f"query embedding ({query_tokens} tokens), warm backend, median of {len(lat)}"
                " (min / max), ms",
                f"{statistics.median(lat) * 1000:.0f} ({min(lat) * 1000:.0f} /"
                f" {max(lat) * 1000:.0f})",
            )
        )
        rows.append(("the same query again (per-backend cache), ms", f"{cached * 1000:.1f}"))
        if plain:
            in_db, private = bulk_write(dsn, texts, args.batch_size)
            copy_s = copy_vectors(dsn, texts, plain)
            rows.append(
                (
                    f"plain Python encode of {len(texts)} passages (~200 tokens) + COPY, s",
                    f"{plain['encode_s']:.1f} + {copy_s:.2f}",
                )
            )
            rows.append(
                (
                    f"in-database INSERT ... SELECT of the same {len(texts)} passages (sync), s",
                    f"{in_db:.1f}",
                )
            )
            rows.append(("the writing backend afterwards: anonymous memory, MB", f"{private:.0f}"))
            rows.append(
                (
                    "throughput in-database / plain Python + COPY",
                    f"{(plain['encode_s'] + copy_s) / in_db:.2f}x",
                )
            )
        if not args.skip_formats and not args.latency_only:
            rows.extend(numeric_formats(dsn, texts[: args.batch_size]))
    print(f"model: {served} (random weights, BGE-M3's configuration, server dtype {args.dtype})")
    print_table(rows)


if __name__ == "__main__":
    main()
