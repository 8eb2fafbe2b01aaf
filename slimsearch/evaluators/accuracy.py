"""Accuracy on a held-out split."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

from slimsearch.evaluators.train import predict_logits


def accuracy_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if not torch.isfinite(logits).all():
        return math.nan
    return (logits.argmax(dim=1) == labels).float().mean().item()


def accuracy(model: nn.Module, split: TensorDataset, *, device: str | None = None) -> float:
    """Top-1 accuracy in [0, 1]; NaN if the model produced non-finite logits. Computed on `device`
    (default: this process's compute device, the GPU in a search that has one) in the precision
    the model deploys in."""
    inputs, labels = split.tensors
    return accuracy_from_logits(predict_logits(model, inputs, device=device), labels)
