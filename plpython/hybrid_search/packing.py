"""bf16 linear layers whose weights oneDNN reordered once (hybrid_search_configure
(pack_weights => true)).

torch hands oneDNN a plain (out, in) bf16 weight, and oneDNN's bf16 matmul
reorders it on every call into the blocked layout its kernels read: at batch 1,
a query, that costs as much as the multiplication itself (BGE-M3 on 1 thread:
a 10-token forward pass 64 ms, 39 ms packed; bench/results/2026-12-02-embed.md).
The packed copy is an oneDNN tensor in the backend's own memory, which a file
mapping cannot hold: 0.6 GB per backend for BGE-M3 instead of one shared copy.
It computes what the layer did: the same bf16 kernels, reading another layout.
"""

import torch

# rows of the calls the layout is chosen for (a query's tokens); any row count works
ROWS_HINT = 32


class PackedLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), ROWS_HINT)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def available() -> bool:
    """Whether this torch runs oneDNN on this CPU and has its packing operators."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    )


def pack_linear_layers(module: torch.nn.Module) -> int:
    """Replaces every bf16 torch.nn.Linear inside module by a PackedLinear; the bytes
    of weights packed. All layers are packed before any is replaced: if packing
    fails, module is left as it was."""
    replacements = [
        (parent, name, PackedLinear(child))
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, torch.nn.Linear) and child.weight.dtype == torch.bfloat16
    ]
    for parent, name, packed in replacements:
        setattr(parent, name, packed)
    return sum(packed.in_features * packed.out_features * 2 for _, _, packed in replacements)
