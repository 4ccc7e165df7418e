"""A text query end to end with the full-size model: query embedding alone and
`hybrid_search('text', 10)` at 100k documents, fp32 against the automatic
number format, in one run.

The model is random with BGE-M3's exact configuration (bench/model_memory.py
explains why); its bf16 copy is written by numerics.prepare, as setup does.
The corpus is retrieval.py's synthetic one (1024-d dense and 250,002-token
sparse vectors COPYed in, so the legs search real-sized indexes); queries are
distinct texts of 5-30 tokens from the model's vocabulary, each embedded once
per phase (no cache hit), two disjoint sets: one for `embed(text)` alone,
one for the whole `hybrid_search(text, 10)` call. Every phase runs in a new
backend after a warm-up, on the same server; the automatic choice with its bf16
weights packed for oneDNN (pack_weights) and int8 (configured: never chosen
automatically) are measured beside them for their speed and agreement.

What the CPU allows is measured in this process first, with the same torch: the
memory read bandwidth, and the matrix multiplications of one batch-1 forward
pass (BGE-M3's 24 layers' shapes, 604 MB of bf16 weights, no model around them)
at 10 and 30 tokens. A query embedding cannot be faster than those. Usage:

    .venv/bin/python bench/query_latency.py [--docs 100000] [--queries 40] [--model DIR]
"""

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import psycopg
from common import print_table, rollup, scratch_database
from hybrid_search import numerics
from hybrid_search_installer.layout import Layout
from hybrid_search_tools.random_model import _WORDS, generate
from retrieval import Corpus, load

PASSAGE = (
    "The autovacuum launcher wakes every naptime seconds and starts a worker for each database "
    "whose tables crossed their thresholds of dead tuples or inserted rows since the last pass. "
)


def query_texts(tokenizer, count: int, seed: int) -> list[str]:
    """count distinct texts of 5 to 30 tokens (specials included), evenly spread."""
    rng = random.Random(seed)
    texts, seen = [], set()
    while len(texts) < count:
        target = 5 + len(texts) * 26 // count
        words = []
        while len(tokenizer(" ".join(words))["input_ids"]) < target:
            words.append(rng.choice(_WORDS))
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def percentile(values, p):
    return float(np.percentile(np.array(values) * 1000, p))


LAYERS, HIDDEN, INNER = 24, 1024, 4096  # BGE-M3 (XLM-RoBERTa-large)
# (out, in) of one layer's linear layers: query, key, value, attention output, FFN in, out
LAYER_SHAPES = [(HIDDEN, HIDDEN)] * 4 + [(INNER, HIDDEN), (HIDDEN, INNER)]


def best_seconds(run, repeats: int = 5) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def machine_limits() -> list[tuple[str, str]]:
    """Rows: read bandwidth (1 GiB summed) and the forward pass's matrix multiplications
    alone in bf16 and int8 (torch's dynamic quantization), on 1 and 2 threads, best of 5."""
    import torch

    rows = []
    saved = torch.get_num_threads()
    big = torch.ones(1 << 28)  # 1 GiB of fp32, far beyond the caches
    weights = [torch.randn(o, i, dtype=torch.bfloat16) * 0.02 for o, i in LAYER_SHAPES * LAYERS]
    bf16_bytes = sum(w.numel() * w.element_size() for w in weights)
    int8 = torch.ao.quantization.quantize_dynamic(
        torch.nn.ModuleList(torch.nn.Linear(i, o, bias=False) for o, i in LAYER_SHAPES * LAYERS),
        {torch.nn.Linear},
        dtype=torch.qint8,
    )
    flops_per_token = 2 * sum(o * i for o, i in LAYER_SHAPES) * LAYERS
    for threads in (1, 2):
        torch.set_num_threads(threads)
        seconds = best_seconds(big.sum)
        rows.append((f"this CPU, {threads} thread(s): memory read bandwidth, GB/s",
                     f"{big.numel() * 4 / seconds / 1e9:.1f} (a forward pass's {bf16_bytes / 1e6:.0f} MB"
                     f" of bf16 weights: {bf16_bytes / (big.numel() * 4) * seconds * 1000:.0f} ms)"))  # fmt: skip
        for tokens in (10, 30):
            inputs = {i: torch.randn(tokens, i) for i in (HIDDEN, INNER)}
            bf16_inputs = {i: x.bfloat16() for i, x in inputs.items()}
            with torch.inference_mode():
                bf16 = best_seconds(
                    lambda x=bf16_inputs: [
                        torch.nn.functional.linear(x[w.shape[1]], w) for w in weights
                    ]
                )
                quantized = best_seconds(
                    lambda x=inputs: [layer(x[layer.in_features]) for layer in int8]
                )
            rows.append((f"this CPU, {threads} thread(s): a forward pass's matrix multiplications alone,"
                         f" {tokens} tokens, bf16 / int8, ms",
                         f"{bf16 * 1000:.0f} / {quantized * 1000:.0f} (bf16: {bf16_bytes / bf16 / 1e9:.1f} GB/s"
                         f" of weights, {flops_per_token * tokens / bf16 / 1e9:.0f} GFLOPS)"))  # fmt: skip
    torch.set_num_threads(saved)
    return rows


def phase(dsn: str, embed_texts, search_texts) -> dict:
    """A new backend: warm-up, then each text once through embed() and hybrid_search()."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        info = conn.execute(
            "select dtype, dtype_reason, load_seconds from hybrid_search_model_info()"
        ).fetchone()
        for i in range(3):
            conn.execute("select * from hybrid_search(%s, 10)", [f"warm up number {i}"])
        embed, whole, dense = [], [], []
        for text in embed_texts:
            started = time.perf_counter()
            row = conn.execute(
                "select dense::text, sparse_to_jsonb(sparse) from embed(%s)", [text]
            ).fetchone()
            embed.append(time.perf_counter() - started)
            dense.append((np.array(row[0][1:-1].split(","), dtype=np.float32), row[1]))
        for text in search_texts:
            started = time.perf_counter()
            rows = conn.execute("select id from hybrid_search(%s, 10)", [text]).fetchall()
            whole.append(time.perf_counter() - started)
            assert len(rows) == 10
        # the same text again from another backend: the shared query cache
        # pages this backend wrote (its own; the weights are clean file pages and the
        # preloaded stack is the postmaster's, shared copy-on-write)
        private = rollup(conn.execute("select pg_backend_pid()").fetchone()[0])["Private_Dirty"]
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("select hybrid_search_model_info()")
        cached = []
        for text in search_texts[:10]:
            started = time.perf_counter()
            other.execute("select id from hybrid_search(%s, 10)", [text]).fetchall()
            cached.append(time.perf_counter() - started)
    return {
        "dtype": info[0],
        "reason": info[1],
        "load_s": info[2],
        "embed": embed,
        "whole": whole,
        "cached": cached,
        "vectors": dense,
        "private_mb": private,
    }


def bulk(dsn: str, passages: list[str]) -> float:
    """Passages per second of an INSERT ... SELECT embedded by the trigger (num_threads 1)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select hybrid_search_model_info()")
        conn.execute("select embed_dense('warm up the writer')")
        started = time.perf_counter()
        with conn.transaction():
            conn.execute("insert into documents (content) select unnest(%s::text[])", [passages])
            rate = len(passages) / (time.perf_counter() - started)
            raise psycopg.Rollback  # keep the corpus as it was
    return rate


def agreement(reference: list, other: list) -> tuple[float, float, float, float]:
    """min dense cosine, mean lexical-weight top-10 overlap, mean weighted overlap
    (sum of min / sum of max weight over all tokens), and the median spread of the
    reference's top-10 weights (largest - 10th): below bf16's resolution (1/128 near 1)
    the top-10 order is a tie that any change of arithmetic reorders."""
    cosines, overlaps, weighted, spreads = [], [], [], []
    for (d1, s1), (d2, s2) in zip(reference, other, strict=True):
        cosines.append(float(d1 @ d2 / np.linalg.norm(d1) / np.linalg.norm(d2)))
        top = sorted(s1, key=lambda t: -s1[t])[:10]
        mine = set(sorted(s2, key=lambda t: -s2[t])[:10])
        overlaps.append(len(mine & set(top)) / len(top) if top else 1.0)
        keys = s1.keys() | s2.keys()
        high = sum(max(s1.get(t, 0.0), s2.get(t, 0.0)) for t in keys)
        low = sum(min(s1.get(t, 0.0), s2.get(t, 0.0)) for t in keys)
        weighted.append(low / high if high else 1.0)
        spreads.append(s1[top[0]] - s1[top[-1]] if top else 0.0)
    return (
        min(cosines),
        statistics.mean(overlaps),
        statistics.mean(weighted),
        statistics.median(spreads),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=40, help="per set (embed, whole call)")
    parser.add_argument("--passages", type=int, default=8, help="bulk-write passages")
    parser.add_argument("--model", type=Path, help="an existing full-size model directory")
    args = parser.parse_args()
    layout = Layout.from_environment()
    load_before = os.getloadavg()
    rows = machine_limits()
    model_dir = args.model or generate(layout.models / "random-bge-m3-full", size="full", seed=0)
    started = time.perf_counter()
    choice = numerics.prepare(str(model_dir))  # what `hybrid-search setup` does
    rows.append(("prepare the automatic format (convert once, if needed), s",
                 f"{time.perf_counter() - started:.1f}"))  # fmt: skip
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    embed_texts = query_texts(tokenizer, args.queries, seed=1)
    search_texts = query_texts(tokenizer, args.queries, seed=2)
    passages = [f"{i}: {PASSAGE * 4}" for i in range(args.passages)]
    conf = "shared_buffers = 2GB\nmaintenance_work_mem = 2GB\nmax_wal_size = 8GB\n"
    # the extension is created first: its installed files are shared with other checkouts
    with scratch_database(layout, str(model_dir), conf) as dsn:
        started = time.perf_counter()
        corpus = Corpus(args.docs, 1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            from pgvector.psycopg import register_vector

            register_vector(conn)
            load(conn, corpus)
            conn.execute("select setval('documents_id_seq', (select max(id) from documents))")
            conn.execute("vacuum analyze documents")
            conn.execute("select hybrid_search_create_dense_index()")
            conn.execute("select hybrid_search_refresh()")
        rows.append((f"build {args.docs:,} documents (COPY, the dense graph, sparse and keyword indexes), s",
                     f"{time.perf_counter() - started:.0f}"))  # fmt: skip
        results = {}
        for name, dtype, threads, pack in (
            ("fp32", "fp32", 0, False),
            ("auto", "auto", 0, False),
            ("auto, 1 query thread", "auto", 1, False),
            ("auto, 2 query threads", "auto", 2, False),
            ("auto, pack_weights", "auto", 0, True),
            ("int8 (configured)", "int8", 0, False),
        ):
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(
                    "select hybrid_search_configure(dtype => %s, query_threads => %s::integer,"
                    " pack_weights => %s)",
                    [dtype, threads, pack],
                )
                admin.execute("select hybrid_search_query_cache_clear()")
            results[name] = phase(dsn, embed_texts, search_texts)
            with_bulk = threads == 0 and dtype != "int8"
            results[name]["bulk"] = bulk(dsn, passages) if with_bulk else None
    load_after = os.getloadavg()
    fp32 = results["fp32"]
    for name, r in results.items():
        rows.append((f"{name}: number format (reason)", f"{r['dtype']} ({r['reason']})"))
        for what, key in (("query embedding alone", "embed"), ("hybrid_search(text, 10)", "whole")):
            rows.append((f"{name}: {what}, p50 / p95 ms",
                         f"{percentile(r[key], 50):.0f} / {percentile(r[key], 95):.0f}"))  # fmt: skip
        rows.append((f"{name}: hybrid_search, same text from another backend (shared cache), p50 ms",
                     f"{percentile(r['cached'], 50):.1f}"))  # fmt: skip
        if r["bulk"]:
            rows.append((f"{name}: bulk write of {args.passages} passages (~200 tokens), passages/s",
                         f"{r['bulk']:.2f}"))  # fmt: skip
        rows.append(
            (f"{name}: private dirty memory of the querying backend, MB", f"{r['private_mb']:.0f}")
        )
    for name in ("auto", "auto, pack_weights", "int8 (configured)"):
        other = results[name]
        for what, key in (("query embedding", "embed"), ("hybrid_search", "whole")):
            rows.append((f"{name} vs fp32: {what} speed-up, p50 / p95",
                         f"{percentile(fp32[key], 50) / percentile(other[key], 50):.2f}x /"
                         f" {percentile(fp32[key], 95) / percentile(other[key], 95):.2f}x"))  # fmt: skip
        cosine, overlap, weighted, spread = agreement(fp32["vectors"], other["vectors"])
        rows.append((f"{name} vs fp32 on the {args.queries} queries: min dense cosine; mean lexical top-10"
                     " overlap; mean weighted lexical overlap; median spread of fp32's top-10 weights",
                     f"{cosine:.4f}; {overlap:.3f}; {weighted:.4f}; {spread:.5f}"))  # fmt: skip
    for name in ("auto", "auto, pack_weights"):
        rows.append((f"{name} vs fp32: bulk throughput",
                     f"{results[name]['bulk'] / fp32['bulk']:.2f}x"))  # fmt: skip
    print(f"model: {model_dir} (random weights, BGE-M3's configuration); auto: {choice.location}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min), "
          f"{os.cpu_count()} cores")  # fmt: skip
    print_table(rows)


if __name__ == "__main__":
    main()
