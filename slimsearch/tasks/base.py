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
        # Everything a search would otherwise trip over minutes later, as a torch traceback
        # mid-trial, is checked here, when the task is made.
        from slimsearch.errors import TaskError

        def fail(message: str) -> None:
            raise TaskError(f"task {self.name!r}: {message}")

        if not isinstance(self.teacher, nn.Module):
            fail(f"teacher must be a torch.nn.Module, but got {type(self.teacher).__name__}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            fail(f"num_classes must be an integer >= 2, but got num_classes={self.num_classes!r}")
        if self.metric != "accuracy":
            fail(f"unknown metric {self.metric!r}; allowed: 'accuracy'")
        if not isinstance(self.example_input, torch.Tensor):
            fail(f"example_input must be a torch.Tensor (one batch of size 1), but got {type(self.example_input).__name__}")
        if self.example_input.dim() == 0 or self.example_input.shape[0] != 1:
            fail(f"example_input must be a batch of 1, but got shape {tuple(self.example_input.shape)}")
        for split_name in ("train", "val", "test"):
            self._check_split(split_name, fail)
        self._check_teacher_fits(fail)

    def _check_split(self, split_name: str, fail) -> None:
        split = getattr(self, split_name)
        if not isinstance(split, TensorDataset) or len(split.tensors) != 2 or len(split) == 0:
            fail(f"{split_name} must be a non-empty TensorDataset of (inputs, labels), but got {type(split).__name__}")
        inputs, labels = split.tensors
        if tuple(inputs.shape[1:]) != tuple(self.example_input.shape[1:]) or inputs.dtype != self.example_input.dtype:
            fail(f"{split_name} inputs are {_describe(inputs, per_sample=True)}, but example_input is "
                 f"{_describe(self.example_input, per_sample=True)}; they must match")
        if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
            fail(f"{split_name} inputs hold NaN or infinite values")
        if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            fail(f"{split_name} labels must be a 1-D tensor of integer class indices, but got {_describe(labels)}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            fail(f"{split_name} labels must lie in [0, {self.num_classes - 1}] (num_classes={self.num_classes}), "
                 f"but range from {low} to {high}")

    def _check_teacher_fits(self, fail) -> None:
        """The teacher must take example_input and return (1, num_classes) logits."""
        was_training = self.teacher.training
        try:
            self.teacher.eval()
            with torch.no_grad():
                output = self.teacher(self.example_input)
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            fail(f"the teacher cannot run on example_input of shape {tuple(self.example_input.shape)} "
                 f"({type(error).__name__}: {first_line}); example_input must be one batch the teacher takes")
        finally:
            self.teacher.train(was_training)
        expected = (1, self.num_classes)
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
            got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
            fail(f"the teacher must return logits of shape {expected} for example_input (num_classes="
                 f"{self.num_classes}), but returned {got}")


def _describe(tensor: torch.Tensor, *, per_sample: bool = False) -> str:
    """'(N, 3, 8, 8) float32' for a batch of samples, '(359,) int64' for a whole tensor."""
    dtype = str(tensor.dtype).replace("torch.", "")
    if per_sample:
        return f"({', '.join(['N', *map(str, tensor.shape[1:])])}) {dtype}"
    return f"{tuple(tensor.shape)} {dtype}"
