"""Proposers: where a search's candidates come from (DESIGN.md section 7).

`create_engine` builds the engine a search's sampler hosts (search/samplers.py): the warm
start, then the sampler over the genome, the predictor-guided inner search, the budgeted
allocation and long fine-tunes of measured candidates, as `config.proposers` lists them.
"""

from __future__ import annotations

from typing import Any

from slimsearch.config import SearchConfig
from slimsearch.search.origins import ALLOCATION, LONG_FINETUNE, PREDICTOR, SAMPLER
from slimsearch.search.proposals.base import History, Proposal, Proposer, Record, read_history
from slimsearch.search.proposals.engine import ProposalEngine

GUIDED = {PREDICTOR, ALLOCATION, LONG_FINETUNE}  # the proposers that read the predictors (search/proposals/knowledge.py)

__all__ = ["History", "Proposal", "ProposalEngine", "Proposer", "Record", "create_engine", "read_history"]


def create_engine(config: SearchConfig, space, task, priors: dict[str, Any], teacher: dict[str, Any], *,
                  seed: int, deadline: float | None = None) -> ProposalEngine:
    """The proposal engine of a search, for one process (`seed` differs between processes);
    `deadline`: the `time.time()` at which a search bounded by time (`config.time_budget`) ends."""
    from slimsearch.search.proposals.allocation import AllocationProposer
    from slimsearch.search.proposals.knowledge import Knowledge
    from slimsearch.search.proposals.long_finetune import LongFinetuneProposer
    from slimsearch.search.proposals.predictor import PredictorProposer
    from slimsearch.search.proposals.sampler import SamplerProposer, optuna_sampler
    from slimsearch.search.proposals.warm_start import WarmStartProposer, bold_in_float, warm_start_limit
    from slimsearch.spaces.encoding import Encoding
    from slimsearch.spaces.layout import Layout
    from slimsearch.spaces.optuna_adapter import distributions, space_distributions
    from slimsearch.spaces.warm_start import starting_candidates

    encoding = Encoding(space)
    wanted = set(config.proposers)
    knowledge = None
    if wanted & GUIDED or (SAMPLER in wanted and config.parametrisation == "genome"):
        layout = Layout.discover(space, task.teacher, task.example_input, round_to=config.space.round_to)
        knowledge = Knowledge(layout, priors, budget_ratio=budget_ratio(config, teacher), teacher=teacher)
    proposers: dict[str, Proposer] = {}
    if SAMPLER in wanted:
        def make_sampler():
            return optuna_sampler(config.sampler, seed=seed, trials=config.trials)

        if config.parametrisation == "genome":
            genome = knowledge.genome
            proposers[SAMPLER] = SamplerProposer(
                distributions((gene.name, gene.domain) for gene in genome.genes),
                lambda genes: encoding.decode(genome.decode(genes)[None, :])[0], make_sampler, genome=True)
        else:
            proposers[SAMPLER] = SamplerProposer(space_distributions(space), space.candidate, make_sampler, genome=False)
    if PREDICTOR in wanted:
        proposers[PREDICTOR] = PredictorProposer(knowledge)
    if ALLOCATION in wanted:
        proposers[ALLOCATION] = AllocationProposer(knowledge)
    if LONG_FINETUNE in wanted:
        proposers[LONG_FINETUNE] = LongFinetuneProposer(knowledge, config.finetune.long_factor, deadline)
    warm = None
    if config.warm_start:
        starts = starting_candidates(space, bold_int8=not bold_in_float(space, priors))
        warm = WarmStartProposer(starts, warm_start_limit(config.trials))
    return ProposalEngine(encoding, proposers, knowledge, warm, seed=seed)


def budget_ratio(config: SearchConfig, teacher: dict[str, Any]) -> float:
    """The latency budget as a ratio to the teacher's latency (an absolute budget over the teacher's measured one)."""
    budget = config.latency_budget
    if budget.relative:
        return budget.value
    return budget.value / float(teacher["latency_ms"])


def needs_priors(config: SearchConfig) -> bool:
    """Whether the search's proposers use the priors (search/priors.py) at all."""
    wanted = set(config.proposers)
    return bool(config.warm_start or wanted & GUIDED
                or (SAMPLER in wanted and config.parametrisation == "genome"))
