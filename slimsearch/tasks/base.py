"""The Task: a teacher model, its data splits, an example input and a metric."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import TensorDataset


@dataclass
class Task:
    """Everything a search needs to know about the user's problem.

    `example_input` is one batch of size 1 in the layout the model takes (it fixes the input
    shape for tracing, export and latency measurement). Splits are `TensorDataset`s of
    (inputs, integer labels); the search selects on `val` and reports on `test`.
    """

    name: str
    teacher: nn.Module
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    example_input: torch.Tensor
    num_classes: int
    metric: str = "accuracy"
    # Facts about the teacher for reports (e.g. its test accuracy when it was trained).
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from slimsearch.errors import TaskError

        if not isinstance(self.teacher, nn.Module):
            raise TaskError(f"task {self.name!r}: teacher must be a torch.nn.Module, but got {type(self.teacher).__name__}")
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if not isinstance(split, TensorDataset) or len(split.tensors) != 2 or len(split) == 0:
                raise TaskError(
                    f"task {self.name!r}: {split_name} must be a non-empty TensorDataset of (inputs, labels), "
                    f"but got {type(split).__name__}"
                )
        if self.example_input.shape[0] != 1:
            raise TaskError(
                f"task {self.name!r}: example_input must be a batch of 1, but got shape {tuple(self.example_input.shape)}"
            )
        if tuple(self.example_input.shape[1:]) != tuple(self.train.tensors[0].shape[1:]):
            raise TaskError(
                f"task {self.name!r}: the data's input shape {tuple(self.train.tensors[0].shape[1:])} does not "
                f"match example_input's {tuple(self.example_input.shape[1:])}"
            )
        if self.metric != "accuracy":
            raise TaskError(f"task {self.name!r}: unknown metric {self.metric!r}; allowed: 'accuracy'")
