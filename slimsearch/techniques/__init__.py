"""Transforms that turn the teacher into a student, one module per technique.

`build_student` applies a candidate's families in a fixed order: architecture substitutions
first (separable, low-rank), then pruning (so pruned channels are those of the final layers),
then quantization (it wraps the final layers, still under the teacher's layer names), then
early exits: cutting the network into segments renames its modules, and the exit heads need
the pruned widths. Execution precision comes last: it only marks the finished model.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from slimsearch.config import SpaceConfig
from slimsearch.spaces.candidate import Candidate
from slimsearch.techniques import exits, lowrank, precision, pruning, quantization, separable

APPLY_ORDER = ("separable", "lowrank", "prune", "quant", "exits", "precision")

Transform = Callable[..., nn.Module]
_TRANSFORMS: dict[str, Transform] = {}


def register_transform(family: str, transform: Transform) -> None:
    if family in _TRANSFORMS:
        raise ValueError(f"a transform for family {family!r} is already registered")
    if family not in APPLY_ORDER:
        raise ValueError(f"family {family!r} has no place in APPLY_ORDER {APPLY_ORDER}")
    _TRANSFORMS[family] = transform


register_transform("prune", lambda model, choices, *, example_input, settings: pruning.apply(
    model, choices, example_input=example_input, round_to=settings.round_to))
register_transform("quant", lambda model, choices, *, example_input, settings: quantization.apply(model, choices))
register_transform("separable", lambda model, choices, *, example_input, settings: separable.apply(model, choices))
register_transform("lowrank", lambda model, choices, *, example_input, settings: lowrank.apply(model, choices))
register_transform("precision", lambda model, choices, *, example_input, settings: precision.apply(model, choices))
register_transform("exits", lambda model, choices, *, example_input, settings: exits.apply(
    model, choices, example_input=example_input))


def build_student(candidate: Candidate, teacher: nn.Module, example_input: torch.Tensor,
                  settings: SpaceConfig | None = None) -> nn.Module:
    """A new student module: a copy of the teacher with the candidate's transforms applied.

    Deterministic for a given teacher and candidate, which is what lets a trial store only its
    candidate and fine-tuned weights and be rebuilt later for export.
    """
    settings = settings or SpaceConfig()
    student = copy.deepcopy(teacher).cpu().eval()
    for family in APPLY_ORDER:
        choices = candidate.family(family)
        if choices and family in _TRANSFORMS:
            student = _TRANSFORMS[family](student, choices, example_input=example_input, settings=settings)
    return student
