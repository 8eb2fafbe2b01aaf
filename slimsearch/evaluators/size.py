"""Model size in bytes.

Two figures, both kept: the analytic packed size (what the weights need at their bit widths,
from shapes alone) and the real size of the exported artifact on disk (which also carries
graph structure and format overhead).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

FLOAT_BITS = 32


def packed_size_bytes(model: nn.Module, bits_per_layer: dict[str, int] | None = None) -> int:
    """Bytes for every parameter and buffer at its layer's bit width (float32 unless given).

    A quantized layer (techniques/quantization.py) reports its own bits: weights at its width
    plus its per-channel scales or k-means codebook; nothing under it is counted again. For a
    plain model, `bits_per_layer` (keyed by module name, like the Candidate) sets a layer's
    width; its scales are then not known and not counted.
    """
    bits_per_layer = bits_per_layer or {}
    total_bits = 0
    counted: list[str] = []  # quantized layers, whose submodules are already in their figure
    for module_name, module in model.named_modules():
        if any(module_name.startswith(prefix + "." if prefix else "") for prefix in counted):
            continue
        if hasattr(module, "packed_bits"):
            total_bits += module.packed_bits()
            counted.append(module_name)
            continue
        bits = bits_per_layer.get(module_name, FLOAT_BITS)
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            # Integer buffers (BatchNorm's step counter) are training bookkeeping, not deployed.
            if tensor.is_floating_point():
                total_bits += tensor.numel() * bits
    return (total_bits + 7) // 8


def file_size_bytes(path: str | Path) -> int:
    """Bytes on disk of an exported model, with its external weights file (ONNX above 2 GB)."""
    from slimsearch.evaluators.deploy import onnx_files_size

    return onnx_files_size(Path(path))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
