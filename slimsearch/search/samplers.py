"""The study's sampler: hosts the proposal engine inside Optuna, so every backend runs it unchanged.

`ProposalSampler` answers Optuna's relative sampling with the engine's next proposal: the
trial's parameters are the proposed candidate's, and its `origin` (and what the proposer
predicted of it) are recorded on the trial before it runs. The driver, `--jobs` processes,
`slimsearch worker`s and the Ray backend's OptunaSearch all call `study.ask()` / `optimize()`
as before and never learn which proposer answered. A trial enqueued beforehand (a retry of a
lost trial, candidates queued by hand) keeps its fixed parameters and proposes nothing.
"""

from __future__ import annotations

from typing import Any

import optuna

from slimsearch.search.origins import FINETUNE_SCALE_ATTR, GENOME_ATTR, ORIGIN_ATTR, PREDICTED_ATTR, QUEUED, RANDOM

PROPOSAL_SECONDS_ATTR = "proposal_seconds"  # time the engine took to propose the trial (overhead, not a stage)


class ProposalSampler(optuna.samplers.BaseSampler):
    """Optuna's sampler interface around a `ProposalEngine` (search/proposals/engine.py)."""

    def __init__(self, engine, space, *, seed: int):
        from slimsearch.spaces.optuna_adapter import space_distributions

        self.engine, self.space = engine, space
        self._distributions = space_distributions(space)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
        return dict(self._distributions)

    def before_trial(self, study, trial) -> None:
        # An enqueued trial keeps its fixed parameters (Optuna never asks for relative ones):
        # one queued by hand says so; a retry says it itself (search/recovery.py).
        if "fixed_params" in trial.system_attrs and ORIGIN_ATTR not in trial.user_attrs:
            study._storage.set_trial_user_attr(trial._trial_id, ORIGIN_ATTR, QUEUED)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        storage = study._storage
        if not search_space or "fixed_params" in trial.system_attrs:
            return {}
        proposal = self.engine.propose(study.get_trials(deepcopy=False))
        storage.set_trial_user_attr(trial._trial_id, PROPOSAL_SECONDS_ATTR, round(self.engine.last_seconds, 4))
        if proposal is None:  # every proposer is out of ideas: Optuna's random sampling takes over
            storage.set_trial_user_attr(trial._trial_id, ORIGIN_ATTR, RANDOM)
            return {}
        storage.set_trial_user_attr(trial._trial_id, ORIGIN_ATTR, proposal.origin)
        if proposal.predicted:
            storage.set_trial_user_attr(trial._trial_id, PREDICTED_ATTR, proposal.predicted)
        if proposal.genome is not None:
            storage.set_trial_user_attr(trial._trial_id, GENOME_ATTR, proposal.genome)
        if proposal.finetune_scale != 1.0:
            storage.set_trial_user_attr(trial._trial_id, FINETUNE_SCALE_ATTR, proposal.finetune_scale)
        params = self.space.params(proposal.candidate)
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()


def create_sampler(config, space, task, study, *, seed: int, deadline: float | None = None) -> ProposalSampler:
    """The sampler of `study` for this process: its proposal engine built from the study's priors
    and teacher figures (search/priors.py, search/proposals/); `deadline` ends a time-bounded search."""
    from slimsearch.search.priors import stored_priors
    from slimsearch.search.proposals import create_engine

    attrs = study.user_attrs
    engine = create_engine(config, space, task, stored_priors(study), attrs.get("teacher") or {}, seed=seed,
                           deadline=deadline)
    return ProposalSampler(engine, space, seed=seed)
