"""The proposal engine: which proposer speaks next, with what it knows, and nothing proposed twice.

Before every proposal the engine reads the study (every process works from the same study,
so `--jobs`, `slimsearch worker`s and resumed searches need no state of their own), refits the
predictors, and asks the warm start first, then the others in the order of SCHEDULE, rotated
by how many trials they have already proposed; one with nothing to offer passes its turn on,
to the model-guided proposers before the sampler.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from slimsearch.search.origins import ALLOCATION, LONG_FINETUNE, PREDICTOR, SAMPLER
from slimsearch.search.proposals.base import History, Proposal, Proposer, read_history
from slimsearch.search.proposals.knowledge import Knowledge
from slimsearch.spaces.encoding import Encoding

# Three turns in eight to the predictor-guided search, two to the budgeted allocation, two to
# long fine-tunes, one to the sampler: the predictor exploits what has been measured, allocation
# covers the latency range along the sensitivity, long fine-tunes take the boldest measured
# models as far as training can (it passes until one could add to the front), and the sampler
# keeps exploring where the predictors are wrong (a quarter of the turns was too many for a
# short search: on digits its trials fine-tuned to 30-95%, a third of a 120 s run). The sampler's
# turn comes last: in the 8-10 trials of a 90 s search of mnist1d without a warm start, its one
# trial in fourth place (exits, four separable convs, 2-bit k-means) fine-tuned to 44.5% and ran
# slower than the teacher, an eighth of the search's time for nothing.
SCHEDULE = (ALLOCATION, PREDICTOR, LONG_FINETUNE, PREDICTOR, ALLOCATION, LONG_FINETUNE, PREDICTOR, SAMPLER)


@dataclass
class ProposalEngine:
    encoding: Encoding
    proposers: dict[str, Proposer]
    knowledge: Knowledge | None = None
    warm_start: Proposer | None = None
    seed: int = 0
    schedule: tuple[str, ...] = SCHEDULE
    last_seconds: float = 0.0  # how long the last proposal took (fitting included), for the record

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._finished: dict = {}  # trial number -> Record of a finished trial
        self._failed: set[str] = set()  # proposers that raised (each warned about once)

    def propose(self, trials) -> Proposal | None:
        """The next proposal for a study whose trials (Optuna FrozenTrials) are `trials`."""
        started = time.perf_counter()
        try:
            return self._propose(self._history(trials))
        finally:
            self.last_seconds = time.perf_counter() - started

    def _history(self, trials) -> History:
        # A finished trial never changes: each is read once.
        fresh = {r.number: r for r in read_history([t for t in trials if t.number not in self._finished],
                                                   self.encoding).records}
        for number, record in fresh.items():
            if record.state in ("COMPLETE", "FAIL", "PRUNED"):
                self._finished[number] = record
        return History([self._finished.get(t.number) or fresh[t.number] for t in trials])

    def _propose(self, history: History) -> Proposal | None:
        if self.warm_start is not None:
            proposal = self.warm_start.propose(history, self._rng)
            if proposal is not None:
                return proposal
        if self.knowledge is not None:
            try:
                self.knowledge.refit(history)
            except Exception as error:  # proposers go on with what the predictors learnt before
                self._warn_once("predictors' refit", error)
        order = [origin for origin in self.schedule if origin in self.proposers]
        if not order:
            return None
        turn = sum(history.count(origin) for origin in set(order))
        first = order[turn % len(order)]
        # When the proposer whose turn it is passes, the model-guided ones are asked before the
        # sampler: a short search cannot afford many blind draws (on digits they fine-tuned to 15-83%).
        others = sorted(set(order) - {first}, key=lambda origin: (origin == SAMPLER, order.index(origin)))
        for origin in [first, *others]:
            try:
                proposal = self.proposers[origin].propose(history, self._rng)
            except Exception as error:  # a proposer's bug must not fail the trial: the next one proposes
                self._warn_once(f"the {origin} proposer", error)
                continue
            if proposal is not None:
                return proposal
        return None

    def _warn_once(self, origin: str, error: Exception) -> None:
        if origin not in self._failed:
            self._failed.add(origin)
            warnings.warn(f"{origin} failed ({type(error).__name__}: {error}); the search goes on without it "
                          f"this time", RuntimeWarning, stacklevel=2)
