"""The one place a Space meets Optuna: its parameters (or a genome's genes) as Optuna distributions."""

from __future__ import annotations

from typing import Iterable

from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, Domain, FloatRange
from slimsearch.spaces.space import Space


def distribution(domain: Domain):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(domain, FloatRange):
        return FloatDistribution(domain.low, domain.high, step=domain.step)
    if isinstance(domain, Choice):
        return CategoricalDistribution(list(domain.options))
    raise TypeError(f"no Optuna mapping for domain {domain!r}")  # a new Domain type must be taught here


def distributions(named_domains: Iterable[tuple[str, Domain]]) -> dict:
    """{name: Optuna distribution} for (name, domain) pairs: a space's parameters or a genome's genes."""
    return {name: distribution(domain) for name, domain in named_domains}


def space_distributions(space: Space) -> dict:
    return distributions((parameter.name, parameter.domain) for parameter in space.parameters())


def suggest_candidate(trial, space: Space) -> Candidate:
    """The trial's candidate: its parameters suggested (or, for a proposed or queued trial, read back)."""
    values = {}
    for parameter in space.parameters():
        domain = parameter.domain
        if isinstance(domain, FloatRange):
            values[parameter.name] = trial.suggest_float(parameter.name, domain.low, domain.high, step=domain.step)
        else:
            values[parameter.name] = trial.suggest_categorical(parameter.name, list(domain.options))
    return space.candidate(values)


def candidate_params(candidate: Candidate, space: Space) -> dict:
    """Sampler values that reproduce `candidate` (for enqueueing it, e.g. to retry a lost trial)."""
    return space.params(candidate)
