"""The one place a Space meets Optuna: turn its parameters into `trial.suggest_*` calls."""

from __future__ import annotations

from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, FloatRange
from slimsearch.spaces.space import Space


def suggest_candidate(trial, space: Space) -> Candidate:
    values = {}
    for parameter in space.parameters():
        domain = parameter.domain
        if isinstance(domain, FloatRange):
            values[parameter.name] = trial.suggest_float(parameter.name, domain.low, domain.high, step=domain.step)
        elif isinstance(domain, Choice):
            values[parameter.name] = trial.suggest_categorical(parameter.name, list(domain.options))
        else:  # a new Domain type must be taught here before a family can use it
            raise TypeError(f"no Optuna mapping for domain {domain!r}")
    return space.candidate(values)


def candidate_params(candidate: Candidate, space: Space) -> dict:
    """Sampler values that reproduce `candidate` (for enqueueing it, e.g. to retry a lost trial)."""
    params = {}
    for parameter in space.parameters():
        knob = parameter.members[0]
        params[parameter.name] = candidate.family(knob.family).get(knob.target, knob.default)
    return params
