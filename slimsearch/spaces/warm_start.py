"""Where a search starts: the candidates a person would try first, before any proposer's own.

In order (`starting_candidates`): pruning 0.5 with int8, pruning 0.8 with int8, or in float where
the latency probes measured that faster (search/proposals/warm_start.py; how far uniform
compression goes: the trust region of search/proposals/trust.py widens from what proves accurate,
and a short search must not spend its time walking there), every early exit at a cautious
threshold with 0.5 pruning, the first exit alone, int8 alone; then the hand baseline's points (uniform structured
pruning at 0.1 ... 0.8, each also with int8: what a user would do with Torch-Pruning by hand)
and the teacher's own neighbourhood (only distillation). A search takes only the first few
(search/proposals/warm_start.py): they are cheap insurance, not where the front comes from;
the sensitivity-shaped and mixed-precision points are the allocation proposer's and the
genome's business now (search/proposals/allocation.py, spaces/genome.py). The bench uses
`hand_baseline` as its hand method. Only knobs the space has are set; every other knob keeps
its default.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, FloatRange, Knob
from slimsearch.spaces.space import Space

HAND_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the hand baseline's uniform pruning ratios
INT8 = "8-uniform"
EXIT_THRESHOLD = 0.9
BOLD_RATIO = 0.8  # the warm start's uniform pruning past the middle: the hand baseline's boldest


class _Builder:
    """Candidates as changes to the space's default candidate."""

    def __init__(self, space: Space):
        self.knobs: dict[str, list[Knob]] = {}
        for knob in space.knobs:
            self.knobs.setdefault(knob.family, []).append(knob)
        self.defaults = space.default_candidate().to_dict()["choices"]

    def candidate(self, **changes: Mapping[str, Any]) -> Candidate:
        # A family the space lacks stays absent: "int8" in a space without quant knobs is no change.
        return Candidate({**self.defaults, **{family: {**self.defaults.get(family, {}), **values}
                                              for family, values in changes.items() if family in self.defaults}})

    def int8(self) -> dict[str, str]:
        return {k.target: INT8 for k in self.knobs.get("quant", []) if INT8 in k.domain.options}

    def uniform_prune(self, ratio: float) -> dict[str, float]:
        return {k.target: ratio for k in self.knobs.get("prune", []) if _allows(k.domain, ratio)}


def hand_baseline(space: Space, ratios: Iterable[float] = HAND_RATIOS) -> list[Candidate]:
    """Uniform pruning at each ratio, fine-tuned with distillation (the default distill knobs), each
    followed by its int8 form where the space quantizes: the baseline a user would build by hand."""
    build = _Builder(space)
    points = []
    for ratio in ratios:
        prune = build.uniform_prune(ratio)
        points.append(build.candidate(prune=prune))
        if build.int8():
            points.append(build.candidate(prune=prune, quant=build.int8()))
    return list(dict.fromkeys(points))


def starting_candidates(space: Space, *, bold_int8: bool = True) -> list[Candidate]:
    """The warm start, in the order it is proposed (see the module's doc); `bold_int8` False: the
    bold pruning point in float (where it was measured faster so)."""
    build = _Builder(space)
    points = _leading(build, bold_int8)
    if build.int8():
        points.append(build.candidate(quant=build.int8()))
    return _teacher_last(build, points + hand_baseline(space))


def _teacher_last(build: _Builder, points: list[Candidate]) -> list[Candidate]:
    """`points` without repeats, the teacher's own architecture moved to the end (in a space
    without pruning or quantization, "prune 0.5 with int8" is the teacher): under a budget
    below the teacher's latency it is stopped at its first measurement, so a short search
    should spend its first trials on the others."""
    teacher = build.candidate()
    return [point for point in dict.fromkeys(points) if point != teacher] + [teacher]


def _leading(build: _Builder, bold_int8: bool) -> list[Candidate]:
    """The points queued before the hand baseline's."""
    int8, half, bold = build.int8(), build.uniform_prune(0.5), build.uniform_prune(BOLD_RATIO)
    points = [build.candidate(prune=half, quant=int8)]
    if bold:
        points.append(build.candidate(prune=bold, quant=int8 if bold_int8 else {}))
    exits = [k for k in build.knobs.get("exits", []) if k.stage is not None]
    if exits and all(EXIT_THRESHOLD in k.domain.options for k in exits):
        # Every exit, with pruning: where exits pay (a deep model on an easy task) most samples
        # leave early, and the proposers need such a point to build on; then one cautious exit on
        # the whole model (slow to fine-tune and to time: on resnet18 a ninth of a 225 s search).
        points += [build.candidate(exits={k.target: EXIT_THRESHOLD for k in exits}, prune=half, quant=int8),
                   build.candidate(exits={k.target: EXIT_THRESHOLD for k in exits[:1]}, quant=int8)]
    return points


def _snap(domain, value: float) -> float:
    if isinstance(domain, FloatRange):
        value = min(max(value, domain.low), domain.high)
        if domain.step is not None:
            value = domain.low + round((value - domain.low) / domain.step) * domain.step
        return round(min(value, domain.high), 6)
    if isinstance(domain, Choice):
        return min(domain.options, key=lambda option: abs(float(option) - value))
    return value


def _allows(domain, value: float) -> bool:
    if isinstance(domain, Choice):
        return value in domain.options
    return isinstance(domain, FloatRange) and abs(_snap(domain, value) - value) < 1e-9
