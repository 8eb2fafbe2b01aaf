"""Where a search starts: the candidates a person would try first, queued before the sampler's.

In queue order (`starting_candidates`):
- pruning 0.5 with int8, one early exit at a cautious threshold, and every exit with that pruning;
- the hand baseline's points: uniform structured pruning at 0.1 ... 0.8, each also with int8
  (what a user would do with Torch-Pruning by hand);
- average ratios spread by layer sensitivity (search/sensitivity.py): layers whose removal costs
  little accuracy are pruned harder, sensitive ones less, and layers that survive 4 bits alone
  get 4 bits;
- int8 alone, and the teacher's own neighbourhood (only distillation).

They are cheap insurance: a random first generation in a joint space of dozens of knobs mostly
lands on candidates that compress everything at once, and the sampler learns faster from a front
that already holds the obvious trade-offs. Only knobs the space has are set; every other knob keeps
its default.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, FloatRange, Knob
from slimsearch.spaces.space import Space

HAND_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the hand baseline's uniform pruning ratios
WARM_RATIOS = (0.5, 0.3, 0.7)  # the average ratios the warm start spreads by sensitivity
INT8 = "8-uniform"
INT4 = "4-uniform"
EXIT_THRESHOLD = 0.9
# Sensitivity-spread ratios go from (1 + SPREAD) x the average for the least sensitive layer to
# (1 - SPREAD) x for the most sensitive one.
SPREAD = 0.5


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


def starting_candidates(space: Space, sensitivity: Mapping[str, Any] | None = None) -> list[Candidate]:
    """The warm start in the order it is queued; `sensitivity` is `search.sensitivity.layer_sensitivity`'s result.

    In order: pruning at 0.5 with int8, one early exit, every exit with that pruning; the hand
    baseline's points (uniform pruning 0.1 ... 0.8, each also with int8); the sensitivity-spread
    ratios; int8 alone and the teacher. Fine-tuning is seeded by candidate and warm-start points
    are never screened out (search/fidelity.py), so the hand baseline's points train here exactly
    as in the baseline itself: a search given the time to get through them has done at least
    what a user would have by hand.
    """
    build = _Builder(space)
    int8 = build.int8()
    points = _leading(build) + hand_baseline(space)
    for ratio in WARM_RATIOS if sensitivity else ():
        spread = spread_by_sensitivity(build.knobs.get("prune", []), sensitivity.get("prune", {}), ratio)
        if spread:
            points.append(build.candidate(prune=spread, quant=int8))
            mixed = mixed_precision(build.knobs.get("quant", []), sensitivity.get("quant", {}),
                                    sensitivity.get("teacher_accuracy"))
            if mixed:
                points.append(build.candidate(prune=spread, quant=mixed))
    if int8:
        points.append(build.candidate(quant=int8))
    return _teacher_last(build, points)


def _teacher_last(build: _Builder, points: list[Candidate]) -> list[Candidate]:
    """`points` without repeats, the teacher's own architecture moved to the end (in a space
    without pruning or quantization, "prune 0.5 with int8" is the teacher): under a budget
    below the teacher's latency it is stopped at its first measurement, so a short search
    should spend its first trials on the others."""
    teacher = build.candidate()
    return [point for point in dict.fromkeys(points) if point != teacher] + [teacher]


def uses_sensitivity(space: Space, count: int) -> bool:
    """Whether the first `count` warm-start points reach the sensitivity-shaped ones (a search
    that queues fewer need not run the sensitivity pass)."""
    build = _Builder(space)
    return count > len(_teacher_last(build, _leading(build) + hand_baseline(space))) - 1


def _leading(build: _Builder) -> list[Candidate]:
    """The points queued before the hand baseline's."""
    int8, half = build.int8(), build.uniform_prune(0.5)
    points = [build.candidate(prune=half, quant=int8)]
    exits = [k for k in build.knobs.get("exits", []) if k.stage is not None]
    if exits and all(EXIT_THRESHOLD in k.domain.options for k in exits):
        # One cautious exit; then every exit, with pruning: where exits pay (a deep model on an
        # easy task) most samples leave early, and the sampler needs such a point to build on.
        points += [build.candidate(exits={exits[0].target: EXIT_THRESHOLD}, quant=int8),
                   build.candidate(exits={k.target: EXIT_THRESHOLD for k in exits}, prune=half, quant=int8)]
    return points


def spread_by_sensitivity(knobs: list[Knob], accuracies: Mapping[str, float], average: float) -> dict[str, float]:
    """Per-layer ratios averaging about `average`, the least sensitive layers pruned hardest.

    Layers are ranked by their accuracy with that layer alone pruned (higher: less sensitive);
    ranks map linearly onto (1 + SPREAD) ... (1 - SPREAD) times the average, each ratio then
    snapped to the knob's grid and range. Ranks rather than raw drops, because an untuned
    pruned network's accuracy is a coarse signal: its order is more trustworthy than its size.
    """
    ranked = sorted((k for k in knobs if k.target in accuracies), key=lambda k: -accuracies[k.target])
    if len(ranked) < 2:
        return {}
    ratios = {}
    for rank, knob in enumerate(ranked):
        scale = 1 + SPREAD - 2 * SPREAD * rank / (len(ranked) - 1)
        ratios[knob.target] = _snap(knob.domain, average * scale)
    return ratios


def mixed_precision(knobs: list[Knob], accuracies: Mapping[str, float], teacher_accuracy: float | None,
                    tolerance: float = 0.01) -> dict[str, str]:
    """4 bits for layers that lose at most `tolerance` accuracy at 4 bits alone, int8 for the rest;
    empty when no layer qualifies (the int8 point already covers that)."""
    if teacher_accuracy is None:
        return {}
    choice = {}
    for knob in knobs:
        if INT8 not in knob.domain.options:
            continue
        robust = knob.target in accuracies and accuracies[knob.target] >= teacher_accuracy - tolerance
        choice[knob.target] = INT4 if robust and INT4 in knob.domain.options else INT8
    return choice if INT4 in choice.values() else {}


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
