"""One batch-1 forward pass of the full-size model, each way of computing it, in one
process (plain Python with the PL/Python venv's packages, no database): fp32, fp32
weights under torch.autocast(bf16), bf16 weights stored (what dtype 'auto' loads),
bf16 packed for oneDNN (pack_weights) and int8 (torch's dynamic quantization), at
10 and 30 tokens; best and median of --repeats passes, dense cosine against fp32,
and with --profile where a bf16 pass spends its time. Usage:

    .venv/bin/python bench/forward_pass.py [--threads 1] [--repeats 7] [--profile] [--model DIR]
"""

import argparse
import contextlib
import copy
import statistics
import time
from pathlib import Path

import torch
from common import print_table
from FlagEmbedding import BGEM3FlagModel
from hybrid_search import numerics, packing
from hybrid_search_installer.layout import Layout
from hybrid_search_tools.random_model import generate

TOKENS = (10, 30)


def token_batch(tokens: int) -> dict:
    """A text of tokens tokens: <s>, ids of ordinary pieces, </s>."""
    ids = torch.randint(5, 1000, (1, tokens), generator=torch.Generator().manual_seed(tokens))
    ids[0, 0], ids[0, -1] = 0, 2
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def forward(model, batch, autocast: bool = False):
    """FlagEmbedding's forward pass as bge_m3.BgeM3.encode_batch runs it (dense and sparse heads)."""
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.inference_mode(), cast:
        return model(batch, return_dense=True, return_sparse=True, return_colbert_vecs=False)


def timed(run, repeats: int) -> tuple[float, float]:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="torch.profiler of a bf16 pass")
    parser.add_argument("--model", type=Path, help="an existing full-size model directory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model or generate(
        Layout.from_environment().models / "random-bge-m3-full", size="full", seed=0
    )
    bf16_dir = numerics.prepare(str(model_dir), "bf16").location
    batches = {tokens: token_batch(tokens) for tokens in TOKENS}
    fp32 = BGEM3FlagModel(str(model_dir), use_fp16=False, devices="cpu").model.eval()
    reference = {n: forward(fp32, b)["dense_vecs"].float() for n, b in batches.items()}
    rows = []

    def measure(name, model, autocast=False):
        for tokens, batch in batches.items():
            best, median = timed(lambda b=batch: forward(model, b, autocast), args.repeats)
            dense = forward(model, batch, autocast)["dense_vecs"].float()
            cosine = torch.nn.functional.cosine_similarity(reference[tokens], dense).item()
            rows.append((f"{name}, {tokens} tokens",
                         f"{best:.0f} / {median:.0f}", f"{cosine:.5f}"))  # fmt: skip

    measure("fp32", fp32)
    measure("fp32 weights under autocast(bf16)", fp32, autocast=True)
    int8 = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8
    )
    measure("int8 (dynamic quantization)", int8)
    del fp32, int8
    bf16 = BGEM3FlagModel(bf16_dir, use_bf16=True, devices="cpu").model.eval()
    measure("bf16 weights stored (dtype 'auto')", bf16)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as trace:
            forward(bf16, batches[TOKENS[-1]])
        print(trace.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    packing.pack_linear_layers(bf16.model)
    measure("bf16 packed for oneDNN (pack_weights)", bf16)
    print(f"model: {model_dir}; {args.threads} thread(s), {args.repeats} passes each")
    print_table(rows, ("forward pass", "best / median ms", "dense cosine vs fp32"))


if __name__ == "__main__":
    main()
