"""Accuracy on a held-out split, in memory or streamed from disk."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from slimsearch.evaluators.train import model_predictor, predict_dataset, predict_logits


def accuracy_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if not torch.isfinite(logits).all():
        return math.nan
    return (logits.argmax(dim=1) == labels).float().mean().item()


def accuracy(model: nn.Module, split: Dataset, *, device: str | None = None, workers: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] on any map-style Dataset of (input, label); NaN if the model produced
    non-finite logits. `workers` DataLoader processes read a split that is not in memory (None: automatic).
    Computed on `device` (default: this process's compute device, the GPU in a search that has one)
    in the precision the model deploys in."""
    from slimsearch.tasks.loading import in_memory

    tensors = in_memory(split)
    if tensors is not None:
        inputs, labels = tensors.tensors
        return accuracy_from_logits(predict_logits(model, inputs, device=device), labels)
    logits, labels = predict_dataset(model_predictor(model, device=device), split, workers=workers)
    return accuracy_from_logits(logits, labels)
