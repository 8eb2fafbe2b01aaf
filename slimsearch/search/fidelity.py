"""Multi-fidelity: a short fine-tune first, the full one only for candidates that could reach the front.

Successive halving over the front, with two rungs. Every candidate is fine-tuned for
`finetune.screen_epochs` of its `finetune.epochs`-long schedule (the same cosine schedule a full
fine-tune follows, so a promoted candidate ends exactly where an unscreened one would). There its
validation accuracy, its measured latency (relative to the teacher timed beside it) and its
packed size form its point at the low rung. It trains on only if no other candidate's point at
that same rung is at least as accurate, as fast and as small. Comparing short fine-tunes with
short fine-tunes needs no guess of how much the remaining epochs would add.

A screened-out trial is complete, with its short-fine-tune accuracy as its objective (the sampler
learns from it) and `stopped_early` set, so the front, the hypervolume and export never count it.

Warm-start candidates are always promoted (their low rung is still recorded, for others to be
compared with). They are the reference points a user would try first, and the low rung misjudges
exactly such points: after one epoch of three, pruning 0.1 with int8 on digits read 95.3%
against 97.8% for a more pruned candidate, then ended at 99.7% against its 98.9%.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any, Callable

from slimsearch.search.pareto import dominates
from slimsearch.search.storage import DIRECTIONS  # accuracy up; latency and bytes down, as a rung point's fields

SCREEN_ATTR = "screen"  # {"epochs", "accuracy", "latency", "size_bytes", "promoted"} of the low rung


@dataclass(frozen=True)
class RungPoint:
    """A candidate at the low rung: accuracy (higher is better), latency ratio and bytes (lower is better)."""

    accuracy: float
    latency: float
    size_bytes: float

    def dominates(self, other: RungPoint) -> bool:
        return dominates(astuple(self), astuple(other), DIRECTIONS)

    def to_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "latency": self.latency, "size_bytes": self.size_bytes}


def rung_points(study, *, exclude: int) -> list[RungPoint]:
    """The low-rung points every other trial of the study recorded (running ones included)."""
    points = []
    for other in study.get_trials(deepcopy=False):
        screen = other.user_attrs.get(SCREEN_ATTR)
        if other.number != exclude and isinstance(screen, dict) and other.state.name in ("COMPLETE", "RUNNING"):
            points.append(RungPoint(screen["accuracy"], screen["latency"], screen["size_bytes"]))
    return points


def promote(point: RungPoint, others: list[RungPoint]) -> bool:
    """Whether `point` is on the front of the low rung: nothing there beats it in all three objectives."""
    return not any(other.dominates(point) for other in others)


class Screen:
    """The `fit(on_checkpoint=...)` callback for one trial: evaluates, records the rung on the
    trial, says whether to go on; `outcome` is what it recorded (None until the checkpoint)."""

    def __init__(self, trial, *, epochs: float, latency_ratio: float, size_bytes: float,
                 evaluate: Callable[[], float], always_promote: bool = False):
        self.trial, self.epochs, self.evaluate, self.always_promote = trial, epochs, evaluate, always_promote
        self.latency_ratio, self.size_bytes = latency_ratio, float(size_bytes)
        self.outcome: dict[str, Any] | None = None

    def __call__(self, _model) -> bool:
        point = RungPoint(self.evaluate(), self.latency_ratio, self.size_bytes)
        promoted = self.always_promote or promote(point, rung_points(self.trial.study, exclude=self.trial.number))
        self.outcome = {"epochs": self.epochs, **point.to_dict(), "promoted": promoted}
        self.trial.set_user_attr(SCREEN_ATTR, self.outcome)
        return promoted

    @property
    def screened_out(self) -> bool:
        return self.outcome is not None and not self.outcome["promoted"]


def screened_out_reason(screen: dict[str, Any], full_epochs: float) -> str:
    return (f"multi-fidelity: after {screen['epochs']:g} of {full_epochs:g} fine-tuning epochs "
            f"({screen['accuracy']:.2%} val, {screen['latency']:.2f}x the teacher's latency) another candidate "
            f"was as accurate, as fast and as small; not fine-tuned further")
