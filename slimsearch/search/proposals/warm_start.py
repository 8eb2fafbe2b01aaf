"""The warm start as a proposer: the few candidates a person would try first, in order.

Cheap insurance, not the source of the front: at most `limit` of them (see `warm_start_limit`),
before every other proposer. The candidates themselves are spaces/warm_start.py's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimsearch.search.origins import WARM_START
from slimsearch.search.proposals.base import History, Proposal, Proposer
from slimsearch.spaces.candidate import Candidate

# A time-bounded search sets `trials` far out of reach; the warm start must stay a handful.
MAX_WARM_START = 3


def warm_start_limit(trials: int) -> int:
    """How many warm-start points a search of `trials` trials gets: a tenth, at least one, at most three."""
    return max(1, min(MAX_WARM_START, trials // 10))


def bold_in_float(space, priors: dict[str, Any]) -> bool:
    """Whether the priors' latency probes timed uniform pruning at the warm start's bold ratio
    faster in float than with int8: at 0.8 it was on digits (0.20x against 0.26x the teacher),
    mnist1d (0.36x, 0.43x) and resnet18 at 32 x 32 (0.073x, 0.089x), where so little work is
    left that int8's quantize and dequantize steps cost more than its kernels save."""
    from slimsearch.spaces.warm_start import BOLD_RATIO, hand_baseline

    forms = hand_baseline(space, ratios=(BOLD_RATIO,))  # [float, int8] where the space quantizes
    measured = {Candidate.from_dict(probe["candidate"]).key: float(probe["ratio"])
                for probe in priors.get("latency_probes", [])}
    ratios = [measured.get(candidate.key) for candidate in forms]
    return len(ratios) == 2 and None not in ratios and ratios[0] < ratios[1]


class WarmStartProposer(Proposer):
    origin = WARM_START

    def __init__(self, candidates: list[Candidate], limit: int):
        self.candidates = candidates[:limit]

    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        if history.count(WARM_START) >= len(self.candidates):
            return None
        tried = history.tried
        for candidate in self.candidates:
            if candidate.key not in tried:
                return Proposal(candidate, WARM_START)
        return None
