"""The warm start as a proposer: the few candidates a person would try first, in order.

Cheap insurance, not the source of the front: at most `limit` of them (see `warm_start_limit`),
before every other proposer. The candidates themselves are spaces/warm_start.py's.
"""

from __future__ import annotations

import numpy as np

from slimsearch.search.origins import WARM_START
from slimsearch.search.proposals.base import History, Proposal, Proposer
from slimsearch.spaces.candidate import Candidate

# A time-bounded search sets `trials` far out of reach; the warm start must stay a handful.
MAX_WARM_START = 3


def warm_start_limit(trials: int) -> int:
    """How many warm-start points a search of `trials` trials gets: a tenth, at least one, at most three."""
    return max(1, min(MAX_WARM_START, trials // 10))


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
