"""Execution precision: the student keeps float32 weights and is marked with the dtype it deploys in.

Fine-tuning keeps float32 master weights whatever the deployment precision (pure float16 training
loses small updates), so this transform changes no tensor: it records the chosen dtype on the
model. Evaluation (evaluators/train.predict_logits) and the deployed forms
(evaluators/runtimes.py, export) read it and run the model cast to that dtype, so accuracy and
latency are both taken in the numerics that ship.
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.spaces.precision import FLOAT32, TARGET

ATTRIBUTE = "slimsearch_precision"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def apply(model: nn.Module, choices: dict[str, object]) -> nn.Module:
    name = choices.get(TARGET, FLOAT32)
    if name not in DTYPES:
        raise ValueError(f"precision must be one of {', '.join(DTYPES)}, but got {name!r}")
    if name != FLOAT32:
        setattr(model, ATTRIBUTE, name)
    return model


def execution_dtype(model: nn.Module) -> torch.dtype | None:
    """The half dtype `model` deploys in, or None for float32."""
    name = getattr(model, ATTRIBUTE, None)
    return DTYPES[name] if name in DTYPES and name != FLOAT32 else None


class CastModel(nn.Module):
    """`inner` computing in `dtype`, with a float32 interface: inputs cast in, logits cast out."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.to(self.dtype)
        return self.inner(x).float()


def in_execution_dtype(model: nn.Module) -> nn.Module:
    """`model` as it computes when deployed: itself for float32, else a cast copy (the caller's
    model keeps its float32 weights)."""
    import copy

    dtype = execution_dtype(model)
    if dtype is None:
        return model
    inner = copy.deepcopy(model)
    delattr(inner, ATTRIBUTE)  # the copy *is* the deployed form: it must not be cast again
    return CastModel(inner, dtype)
