"""Store a BGE-M3 model's weights in the dtype the server computes in.

Backends share a model's weights only while they stay memory-mapped from the
file: safetensors in the dtype they are loaded as. Loading fp32 weights as
bf16 converts them into private memory in every backend, so a bf16 server
wants bf16 files. This writes a copy of a model directory with every
floating-point tensor (transformer, sparse and ColBERT heads) converted, and
pytorch_model.bin replaced by model.safetensors, once, at setup.

The server writes such a copy itself when it prepares a model
(numerics.prepare); `hybrid-search convert-model` runs hybrid_search_tools.convert.
"""

import json
import os
import shutil
from pathlib import Path

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
HEADS = ("sparse_linear.pt", "colbert_linear.pt")


MARKER = "hybrid_search_converted.json"


def fingerprint(location: str) -> dict:
    """Name, size and modification time of the model's weight files."""
    path = Path(os.path.expanduser(location))
    files = sorted(
        p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file()
    )
    return {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in files}


def is_converted_copy(copy: Path, location: str) -> bool:
    """Whether copy holds a complete conversion of location's current weights."""
    try:
        marker = json.loads((copy / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("source_weights") == fingerprint(location)


def _converted(tensors: dict, dtype) -> dict:
    return {
        name: t.to(dtype).contiguous() if t.is_floating_point() else t
        for name, t in tensors.items()
    }


def convert(source: Path, target: Path, dtype: str = "bf16") -> Path:
    """target, holding source's model with floating-point weights in dtype."""
    import torch
    from safetensors.torch import load_file, save_file

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    torch_dtype = getattr(torch, DTYPES[dtype])
    source, target = Path(source), Path(target)
    if not (source / "config.json").exists():
        raise FileNotFoundError(f"{source} holds no model (no config.json)")
    target.mkdir(parents=True, exist_ok=True)
    weights = sorted(source.glob("*.safetensors"))
    for path in weights:
        save_file(_converted(load_file(path), torch_dtype), target / path.name)
    if not weights and (source / "pytorch_model.bin").exists():
        state = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
        save_file(_converted(state, torch_dtype), target / "model.safetensors")
    for head in HEADS:
        if (source / head).exists():
            state = torch.load(source / head, map_location="cpu", weights_only=True)
            torch.save(_converted(state, torch_dtype), target / head)
    config = json.loads((source / "config.json").read_text())
    config["torch_dtype"] = DTYPES[dtype]
    (target / "config.json").write_text(json.dumps(config, indent=2))
    skip = {"config.json", "pytorch_model.bin", *HEADS, *(p.name for p in weights)}
    for path in source.iterdir():
        if path.is_file() and path.name not in skip:
            shutil.copy2(path, target / path.name)
    # what was converted: numerics.resolve loads this copy only while it matches the source
    (target / MARKER).write_text(
        json.dumps({"source": str(source), "dtype": dtype, "source_weights": fingerprint(source)})
    )
    for path in target.iterdir():
        path.chmod(0o644)  # the server's OS user reads them (save_file writes 0600)
    return target
