"""Which number format the model computes in, chosen from what the CPU offers.

dtype 'auto' (the default) decides once per model load, from the CPU's flags
and the model's size:

- bf16 where the CPU multiplies bf16 in hardware (AMX tiles ``amx_bf16``, or
  AVX-512 ``avx512_bf16``) and the model is big enough for it to pay: a
  full-size BGE-M3 query is 3-5x faster than fp32 there, with dense cosine
  >= 0.999 against fp32 (plpython/tests/test_numerics.py);
- fp32 elsewhere: without those units torch emulates bf16, about 4x slower
  than fp32 (README, Memory and time per backend); and for a small model the
  forward pass costs little in fp32 anyway.

int8 is never chosen automatically: torch's dynamic quantization keeps a
quantized copy of every linear layer in each backend's private memory (the
weights are no longer shared through the page cache) and agrees less with fp32:
dense cosine 0.990-0.992 on the full-size model (0.993 per-channel, 0.9989
with only the FFN's output layers in int8), below the 0.999 bound, although
AVX-512 VNNI makes it 1.5-2.5x faster than bf16 at batch 1
(bench/results/2026-12-02-embed.md).

bf16 needs the weights stored in bf16: loading fp32 files as bf16 converts
them into every backend's private memory. ``prepare`` writes a converted copy
next to the model once (``DIR-bf16``, see convert.py), at setup or in
``hybrid_search_set_model``; a backend loads it memory-mapped, shared by all.
Without a converted copy the choice falls back to fp32 and says why.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .convert import convert, is_converted_copy

BF16_UNITS = ("amx_bf16", "avx512_bf16")  # in order of preference
# weights multiplied per token below which bf16 does not pay (BGE-M3: 302M; the tiny
# test model: 16k; all-MiniLM-L6-v2: 21M)
MIN_BF16_PARAMETERS = 50_000_000
CONFIGURABLE = ("auto", "fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class Choice:
    dtype: str  # what the model computes in: fp32, bf16, fp16 or int8
    reason: str  # why, in a sentence for hybrid_search_model_info()
    location: str  # the directory to load (the model, or its converted copy)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux), empty where they cannot be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def bf16_unit(flags: frozenset[str]) -> str | None:
    """The best bf16 unit among flags, or None."""
    return next((unit for unit in BF16_UNITS if unit in flags), None)


def matmul_parameters(location: str) -> int | None:
    """Weights of the transformer's matrix multiplications (what a token's forward pass
    reads), from config.json; None when the model is not a readable directory."""
    try:
        config = json.loads((Path(location) / "config.json").read_text())
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        inner = int(config.get("intermediate_size", 4 * hidden))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return layers * (4 * hidden * hidden + 2 * hidden * inner)


def stored_dtype(location: str) -> str | None:
    """The dtype config.json says the weights are stored in (bf16, fp16, fp32), or None."""
    try:
        config = json.loads((Path(location) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("torch_dtype") or config.get("dtype")
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(name)


def converted_location(location: str, dtype: str) -> Path:
    """Where the copy of location's model converted to dtype lives: DIR-bf16 beside it."""
    path = Path(os.path.expanduser(location))
    return path.with_name(f"{path.name}-{dtype}")


def choose(
    configured: str, flags: frozenset[str], device: str = "cpu", parameters: int | None = None
) -> tuple[str, str]:
    """(dtype, reason) for a configured dtype, the CPU's flags and the model's size
    (matmul_parameters). Only 'auto' is decided here; anything else is the DBA's."""
    if configured != "auto":
        return configured, f"configured: hybrid_search_configure(dtype => '{configured}')"
    if device != "cpu":
        return "fp32", f"automatic: device {device} is not a CPU; configure a dtype for it"
    unit = bf16_unit(flags)
    if unit is None:
        return "fp32", (
            "automatic: this CPU has no bf16 units (neither amx_bf16 nor avx512_bf16), where"
            " bf16 would be emulated and about 4x slower than fp32"
        )
    if parameters is not None and parameters < MIN_BF16_PARAMETERS:
        return "fp32", (
            f"automatic: a small model ({parameters:,} weights per token) costs little"
            f" in fp32; bf16 ({unit}) is chosen from {MIN_BF16_PARAMETERS // 1_000_000}M"
        )
    what = "AMX bf16 tiles" if unit == "amx_bf16" else "AVX-512 bf16 instructions"
    return "bf16", f"automatic: this CPU has {what} ({unit}): bf16 queries are 3-5x faster"


def resolve(location: str, configured: str, device: str, flags=None) -> Choice:
    """What to load for a model location and configured dtype: the dtype chosen, why,
    and the directory (a converted copy when bf16 is chosen and one exists; without
    one, 'auto' falls back to fp32 rather than converting into private memory)."""
    flags = cpu_flags() if flags is None else flags
    dtype, reason = choose(configured, flags, device, matmul_parameters(location))
    if dtype not in ("bf16", "fp16") or not Path(os.path.expanduser(location)).is_dir():
        return Choice(dtype, reason, location)
    if stored_dtype(location) == dtype:
        return Choice(dtype, f"{reason}; weights stored in {dtype}", location)
    copy = converted_location(location, dtype)
    if is_converted_copy(copy, location):
        return Choice(dtype, f"{reason}; weights converted once into {copy}", str(copy))
    if configured == "auto":
        return Choice(
            "fp32",
            f"{reason}, but there is no converted copy of the weights ({copy}): computing in"
            f" fp32. SELECT hybrid_search_set_model('{location}') or `hybrid-search"
            f" convert-model {location}` writes it",
            location,
        )
    return Choice(dtype, f"{reason}; weights converted on load (private to each backend)", location)


def prepare(location: str, configured: str = "auto", device: str = "cpu", flags=None) -> Choice:
    """resolve(), after writing the converted copy the choice wants if it is missing
    (once: later calls find it). The copy is written beside the model through a
    temporary directory renamed into place, so a concurrent loader never sees half
    of it; if the directory is not writable, the choice stays what resolve says."""
    flags = cpu_flags() if flags is None else flags
    dtype, _ = choose(configured, flags, device, matmul_parameters(location))
    path = Path(os.path.expanduser(location))
    if (
        dtype in ("bf16", "fp16")
        and path.is_dir()
        and stored_dtype(location) != dtype
        and not is_converted_copy(converted_location(location, dtype), location)
    ):
        _write_copy(location, dtype)
    return resolve(location, configured, device, flags)


def _write_copy(location: str, dtype: str) -> None:
    import shutil
    import tempfile

    copy = converted_location(location, dtype)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{copy.name}.", dir=copy.parent))
    except OSError:
        return  # not writable by this process: resolve() explains the fallback
    try:
        convert(Path(location), scratch, dtype)
        scratch.chmod(0o755)
        if copy.exists():  # stale (another source) or written meanwhile by someone else
            if is_converted_copy(copy, location):
                return
            shutil.rmtree(copy)
        os.rename(scratch, copy)
    except OSError:
        pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
