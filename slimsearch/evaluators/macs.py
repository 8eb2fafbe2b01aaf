"""Compute counted, beside latency measured: "MACs fell but latency did not".

Every trial records its multiply-accumulates and parameters as ratios to the teacher's, next to
its measured speed-up. A candidate that halved its MACs but is barely faster shows where the
runtime, not the arithmetic, sets the pace (launch-bound GPU kernels, memory-bound depthwise
convolutions, thin layers that no kernel runs well); the trials table, `front --json` and the
report flag it. MACs are counted by torch's FlopCounterMode (convolutions and matrix products,
which is what MACs conventionally count), never by hand; latency is never derived from them.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the reports read `flags` without it
    import torch
    from torch import nn

# A candidate is flagged when its MACs fell at least this many times while it ran less than
# SPEEDUP_BELOW times faster than the teacher.
MACS_FELL_BY = 2.0
SPEEDUP_BELOW = 1.2
FLAG_MACS_NOT_LATENCY = "macs-fell-latency-did-not"
FLAG_NOTES = {FLAG_MACS_NOT_LATENCY: f"MACs fell {MACS_FELL_BY:g}x or more, latency less than {SPEEDUP_BELOW:g}x"}


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one inference of `model` on `example_input` (batch 1).

    An early-exit model is counted along its whole path, every segment and head (what a sample
    that leaves at none of the exits costs), since how many leave early depends on data.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = example_input[:1].to(device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            exit_logits = getattr(model, "exit_logits", None)
            exit_logits(x) if callable(exit_logits) else model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2  # a MAC is a multiply and an add: two FLOPs


# teacher -> (MACs, parameters): counted once per teacher, forgotten with it.
_teacher_counts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def record_compute(trial, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor) -> None:
    """Set the trial's `macs`, `macs_ratio` and `params_ratio` (student over teacher)."""
    from slimsearch.evaluators.size import parameter_count

    if teacher not in _teacher_counts:
        _teacher_counts[teacher] = (count_macs(teacher, example_input), parameter_count(teacher))
    teacher_macs, teacher_params = _teacher_counts[teacher]
    macs = count_macs(student, example_input)
    trial.set_user_attr("macs", macs)
    trial.set_user_attr("macs_ratio", macs / teacher_macs if teacher_macs else None)
    trial.set_user_attr("params_ratio", parameter_count(student) / teacher_params if teacher_params else None)


def flags(macs_ratio: float | None, speedup: float | None) -> list[str]:
    """What is worth a second look about a trial's figures (empty when nothing is)."""
    found = []
    if macs_ratio is not None and speedup is not None and macs_ratio > 0:
        if 1 / macs_ratio >= MACS_FELL_BY and speedup < SPEEDUP_BELOW:
            found.append(FLAG_MACS_NOT_LATENCY)
    return found
