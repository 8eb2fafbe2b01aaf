"""The Task: a teacher model, its data splits, an example input and a metric, and what a search draws from them."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

# Samples of a streamed split read when the task is made (besides its first and last).
SAMPLES_CHECKED = 6


@dataclass
class Task:
    """Everything a search needs to know about the user's problem.

    `example_input` is one batch of size 1 in the layout the model takes (it fixes the input
    shape for tracing, export and latency measurement). Splits are map-style
    `torch.utils.data.Dataset`s whose items are (input tensor, integer label): a
    `TensorDataset` held in memory, or any dataset read from disk sample by sample (it is
    streamed through DataLoader workers, never loaded whole). The search selects on `val` and
    reports on `test`.

    Two settings say how the data is read (a search sets them from its config when given there):
    `loader_workers`, the DataLoader processes for splits that are not in memory (None:
    automatic), and `val_samples`, the size of the search-time validation subset (None: trials
    are scored on the whole of `val`).
    """

    name: str
    teacher: nn.Module
    train: Dataset
    val: Dataset
    test: Dataset
    example_input: torch.Tensor
    num_classes: int
    metric: str = "accuracy"
    # Facts about the teacher for reports (e.g. its test accuracy when it was trained).
    info: dict = field(default_factory=dict)
    loader_workers: int | None = None
    val_samples: int | None = None
    _drawn: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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
        for key in ("loader_workers", "val_samples"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (key == "val_samples")):
                fail(f"{key} must be None or an integer >= {int(key == 'val_samples')}, but got {key}={value!r}")
        for split_name in ("train", "val", "test"):
            self._check_split(split_name, fail)
        self._check_teacher_fits(fail)

    # --- what a search reads, drawn from the splits as streams ----------------------------------

    @property
    def search_val(self) -> Dataset:
        """The validation data trials are scored on: `val`, or a seeded subset of `val_samples` of it
        (the same for every trial and process of a study)."""
        from slimsearch.tasks.loading import draw_indices

        if not self.val_is_subset:
            return self.val
        if "search_val" not in self._drawn:
            indices = sorted(draw_indices(len(self.val), self.val_samples))
            self._drawn["search_val"] = (TensorDataset(*(tensor[indices] for tensor in self.val.tensors))
                                         if isinstance(self.val, TensorDataset) else Subset(self.val, indices))
        return self._drawn["search_val"]

    @property
    def val_is_subset(self) -> bool:
        """Whether trials are scored on part of `val` (front models are then re-evaluated on all of it)."""
        return self.val_samples is not None and self.val_samples < len(self.val)

    def calibration_inputs(self) -> torch.Tensor:
        """Train inputs that set quantized models' activation ranges: up to 512 (fewer for large inputs,
        at most 128 MB), drawn as `_draw` says, read once and kept."""
        from slimsearch.tasks.loading import CALIBRATION_BYTES, CALIBRATION_SAMPLES, sample_bytes

        if "calibration" not in self._drawn:
            count = max(1, min(CALIBRATION_SAMPLES, CALIBRATION_BYTES // max(1, sample_bytes(self.train))))
            self._drawn["calibration"] = self._draw(self.train, count)
        return self._drawn["calibration"]

    def latency_samples(self, count: int) -> torch.Tensor:
        """`count` real validation inputs (drawn as `_draw` says, read once): early-exit models are timed on these."""
        key = ("latency", count)
        if key not in self._drawn:
            self._drawn[key] = self._draw(self.val, count)
        return self._drawn[key]

    def _draw(self, split: Dataset, count: int) -> torch.Tensor:
        """`count` inputs of `split`: a seeded draw from a streamed split (folders list their files class
        by class), the first ones of an in-memory split (as before streaming: built-in splits are shuffled)."""
        from slimsearch.tasks.loading import draw_indices, in_memory, stack_inputs

        if in_memory(split) is not None:
            return split.tensors[0][:count]
        return stack_inputs(split, draw_indices(len(split), count), workers=self.loader_workers)

    # --- checks -----------------------------------------------------------------------------

    def _check_split(self, split_name: str, fail) -> None:
        split = getattr(self, split_name)
        if isinstance(split, TensorDataset):
            self._check_tensor_split(split_name, split, fail)
            return
        if not isinstance(split, Dataset) or not hasattr(split, "__getitem__") or not hasattr(split, "__len__"):
            fail(f"{split_name} must be a map-style torch.utils.data.Dataset of (input, label) with __len__ and "
                 f"__getitem__, but got {type(split).__name__}")
        if len(split) == 0:
            fail(f"{split_name} is empty")
        self._check_samples(split_name, split, fail)

    def _check_tensor_split(self, split_name: str, split: TensorDataset, fail) -> None:
        if len(split.tensors) != 2 or len(split) == 0:
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

    def _check_samples(self, split_name: str, split: Dataset, fail) -> None:
        """A streamed split cannot be checked whole up front: its first and last samples and a seeded
        handful between are read and checked like a TensorDataset's (a sample that differs later is
        named by the loader when it is met)."""
        from slimsearch.tasks.loading import describe_sample, draw_indices

        targets = getattr(split, "targets", None)  # folder datasets know every label without reading an image
        if isinstance(targets, (list, tuple, torch.Tensor)) and len(targets) == len(split) and len(targets):
            labels = torch.as_tensor(targets)
            if not labels.is_floating_point() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                fail(f"{split_name} labels must lie in [0, {self.num_classes - 1}] (num_classes={self.num_classes}), "
                     f"but range from {int(labels.min())} to {int(labels.max())}")
        expected = _describe(self.example_input[0])
        for index in sorted({0, len(split) - 1, *draw_indices(len(split), SAMPLES_CHECKED, seed=1)}):
            where = f"{split_name} {describe_sample(split, index)}"
            try:
                item = split[index]
            except Exception as error:
                first_line = (str(error).strip().splitlines() or [""])[0][:200]
                fail(f"{where} cannot be read ({type(error).__name__}: {first_line})")
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                fail(f"{where} must be a pair (input, label), but is {type(item).__name__}"
                     + (f" of {len(item)}" if isinstance(item, (tuple, list)) else ""))
            inputs, label = item
            if not isinstance(inputs, torch.Tensor) or inputs.shape != self.example_input.shape[1:] \
                    or inputs.dtype != self.example_input.dtype:
                got = _describe(inputs) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
                fail(f"{where} is {got}, but example_input's samples are {expected}; every sample must have that "
                     f"shape and dtype (resize images to one size, e.g. with torchvision.transforms.Resize)")
            if isinstance(label, torch.Tensor):
                label = label.item() if label.numel() == 1 and not label.is_floating_point() else label
            if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < self.num_classes:
                fail(f"{where} has label {label!r}; labels must be integers in [0, {self.num_classes - 1}] "
                     f"(num_classes={self.num_classes})")

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
