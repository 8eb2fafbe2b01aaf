"""Optuna's sampler as a proposer, over the genome (spaces/genome.py) or over every knob.

The sampler (NSGA-II, TPE or random) runs on an in-memory study of its own whose parameters
are the genes. What it suggests is decoded to a full candidate; when the real trial finishes,
its objective values and latency constraint are told to the suggestion it came from. Trials it
did not propose here (other processes' suggestions carrying genes, or a resumed study's) are
added as finished trials, so the sampler learns from the whole study in any process.
With `parametrisation = "layer"` the genes are the space's own parameters, one per knob.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from slimsearch.config import SAMPLERS
from slimsearch.errors import ConfigError
from slimsearch.search.origins import SAMPLER
from slimsearch.search.proposals.base import History, Proposal, Proposer, Record
from slimsearch.search.storage import CONSTRAINT_NAME, DIRECTIONS
from slimsearch.spaces.candidate import Candidate

ATTEMPTS = 20  # suggestions tried before giving up on finding a candidate not yet in the study
_CONSTRAINT_KEY = f"constraints:{CONSTRAINT_NAME}"  # where Optuna keeps a trial's `set_constraint` value


class SamplerProposer(Proposer):
    origin = SAMPLER

    def __init__(self, distributions: dict[str, Any], decode: Callable[[dict[str, Any]], Candidate],
                 make_sampler: Callable[[], Any], *, genome: bool):
        import optuna

        self.distributions, self.decode, self.genome, self.make_sampler = distributions, decode, genome, make_sampler
        self._study = optuna.create_study(directions=list(DIRECTIONS), sampler=make_sampler())
        self._pending: dict[str, Any] = {}  # candidate key -> the suggestion awaiting its real trial's outcome
        self._learned: set[int] = set()

    def __getstate__(self) -> dict:
        # Ray Tune pickles the searcher with the study's sampler in it; an in-memory study holds
        # a lock. The sampler's study is rebuilt from the real one on the next proposal.
        return {key: value for key, value in self.__dict__.items() if key not in ("_study", "_pending", "_learned")}

    def __setstate__(self, state: dict) -> None:
        import optuna

        self.__dict__.update(state)
        self._study = optuna.create_study(directions=list(DIRECTIONS), sampler=self.make_sampler())
        self._pending, self._learned = {}, set()

    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        from optuna.trial import TrialState

        self._learn(history)
        tried = history.tried
        for _ in range(ATTEMPTS):
            trial = self._study.ask(self.distributions)
            genes = dict(trial.params)
            candidate = self.decode(genes)
            if candidate.key not in tried and candidate.key not in self._pending:
                self._pending[candidate.key] = trial
                return Proposal(candidate, SAMPLER, genome=genes if self.genome else None)
            self._study.tell(trial, state=TrialState.FAIL)  # a repeat: nothing to learn from it
        return None

    def _learn(self, history: History) -> None:
        import optuna
        from optuna.trial import TrialState

        for record in history.records:
            if record.number in self._learned or record.state not in ("COMPLETE", "FAIL"):
                continue
            self._learned.add(record.number)
            pending = self._pending.pop(record.key, None) if record.key is not None else None
            if pending is not None:
                if record.state == "COMPLETE" and record.values is not None:
                    self._study._storage.set_trial_system_attr(pending._trial_id, _CONSTRAINT_KEY, record.violation)
                    self._study.tell(pending, list(record.values))
                else:
                    self._study.tell(pending, state=TrialState.FAIL)
                continue
            genes = self._genes(record)
            if record.state != "COMPLETE" or record.values is None or not genes or set(genes) != set(self.distributions):
                continue
            try:
                trial = optuna.trial.create_trial(params=genes, distributions=self.distributions,
                                                  values=list(record.values),
                                                  system_attrs={_CONSTRAINT_KEY: record.violation})
            except ValueError:  # a value outside today's distributions (an older study): skip it
                continue
            self._study.add_trial(trial)

    def _genes(self, record: Record) -> dict[str, Any] | None:
        return record.genome if self.genome else record.params


def optuna_sampler(name: str, *, seed: int, trials: int):
    """Optuna's sampler by name, told about the latency constraint where it can use it."""
    import optuna

    # Constraints need no `constraints_func`: trials carry theirs as `set_constraint` stores it
    # (_CONSTRAINT_KEY), which Optuna's constraint-aware samplers read.
    if name == "nsga2":
        # Optuna's default population of 50 would make a short search pure random sampling;
        # scale it with the budget so a few generations actually evolve, and cap it so a search
        # bounded by time rather than trials (trials set high) still evolves early.
        population = max(6, min(16, trials // 8))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sampler must be one of {', '.join(repr(s) for s in SAMPLERS)}, but got sampler={name!r}")
