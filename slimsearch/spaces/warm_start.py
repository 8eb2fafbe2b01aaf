"""Where a search starts: a few candidates a person would try first, queued before the sampler's.

Int8 everywhere, uniform pruning at two ratios with int8, one early exit at a cautious
threshold, and the teacher's own neighbourhood (no compression, only distillation). They are cheap
insurance: a random first generation in a joint space of dozens of knobs mostly lands on
candidates that compress everything at once, and the sampler learns faster from a front that
already holds the obvious trade-offs. Only knobs the space has are set; every other knob keeps
its default.
"""

from __future__ import annotations

from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, FloatRange
from slimsearch.spaces.space import Space

PRUNE_RATIOS = (0.25, 0.5)
INT8 = "8-uniform"
EXIT_THRESHOLD = 0.9


def starting_candidates(space: Space) -> list[Candidate]:
    knobs = {family: [k for k in space.knobs if k.family == family] for family in {k.family for k in space.knobs}}
    defaults = space.default_candidate().to_dict()["choices"]

    def candidate(**changes: dict) -> Candidate:
        return Candidate({**defaults, **{family: {**defaults.get(family, {}), **values} for family, values in changes.items()}})

    int8 = {k.target: INT8 for k in knobs.get("quant", []) if INT8 in k.domain.options}
    points = [candidate(quant=int8)] if int8 else []
    for ratio in PRUNE_RATIOS:
        prune = {k.target: ratio for k in knobs.get("prune", []) if _allows(k.domain, ratio)}
        if prune:
            points.append(candidate(prune=prune, quant=int8))
    exits = [k for k in knobs.get("exits", []) if k.stage is not None and EXIT_THRESHOLD in k.domain.options]
    if exits:
        points.append(candidate(exits={exits[0].target: EXIT_THRESHOLD}, quant=int8))
    # The teacher's own architecture last: under a budget below the teacher's latency it is
    # stopped at its first measurement, so a short search should spend its first trials above.
    points.append(candidate())
    return list(dict.fromkeys(points))


def _allows(domain, value: float) -> bool:
    if isinstance(domain, Choice):
        return value in domain.options
    if isinstance(domain, FloatRange):
        on_grid = domain.step is None or abs(round((value - domain.low) / domain.step) * domain.step + domain.low - value) < 1e-9
        return domain.low <= value <= domain.high and on_grid
    return False
