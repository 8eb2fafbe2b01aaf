"""Samplers by name, each told about the latency constraint where it can use it."""

from __future__ import annotations

from slimsearch.config import SAMPLERS
from slimsearch.errors import ConfigError

# Trials record their latency constraint themselves (`trial.set_constraint`, <= 0 is
# feasible); NSGA-II and TPE read it from there and prefer feasible trials.
CONSTRAINT_NAME = "latency"


def create_sampler(name: str, *, seed: int, trials: int):
    import optuna

    if name == "nsga2":
        # Optuna's default population of 50 would make a 30-trial search pure random sampling;
        # scale it with the budget so a few generations actually evolve, and cap it so a search
        # bounded by time rather than trials (trials set high) still evolves within its first
        # few dozen trials.
        population = max(6, min(16, trials // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sampler must be one of {', '.join(repr(s) for s in SAMPLERS)}, but got sampler={name!r}")
