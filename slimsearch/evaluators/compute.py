"""Where models are trained and evaluated: the GPU when there is one (`finetune.device`).

The search process sets its compute device once (`use_device`, from TrialContext.create), and
everything that trains or runs a model on data (the fine-tune, teacher logits, the sensitivity
pass, accuracy) takes it as its default. One process-wide default rather than a `device=`
threaded through every caller: those callers live in the searching and reporting code, which
should not have to know where arithmetic happens. Teachers are still trained where their task
says (the CPU), so a cached teacher is the same on every machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from slimsearch.errors import ConfigError

_device = ["cpu"]


def resolve_device(setting: str) -> str:
    """'cpu' or 'cuda' for a `finetune.device` setting ('auto': cuda when torch sees a GPU)."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("finetune.device='cuda', but torch sees no CUDA GPU on this machine "
                          "(torch.cuda.is_available() is False); allowed here: device='cpu' or 'auto'")
    if setting not in ("cpu", "cuda"):
        raise ConfigError(f"finetune.device must be one of 'auto', 'cpu', 'cuda', but got device={setting!r}")
    return setting


def use_device(device: str) -> None:
    """Make `device` ('cpu' or 'cuda') the default for training and evaluation in this process."""
    _device[0] = resolve_device(device)


def compute_device() -> str:
    return _device[0]


def autocast_dtype(model: nn.Module, device: str, enabled: bool) -> torch.dtype | None:
    """bfloat16 for fine-tuning `model` on a CUDA device, or None (float32).

    bf16 keeps float32's range, so no loss scaling is needed, and it halves the matmul and conv
    time on tensor cores. Not for a model with quantized layers: their fake-quant grids and the
    fp16 rounding of 16-bit layers need more mantissa than bf16's 8 bits, so autocast there would
    train a different model from the one that deploys.
    """
    from slimsearch.techniques.quantization import quantized_layers

    if not enabled or device != "cuda" or quantized_layers(model):
        return None
    return torch.bfloat16


@contextlib.contextmanager
def training_precision(dtype: torch.dtype | None, device: str) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device, dtype=dtype):
        yield
