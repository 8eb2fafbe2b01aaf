"""The budget preflight refuses only a budget none of the candidates it times can meet.

A model whose cost is many tiny layers: pruning the heavy stem makes it fast, while low-rank
factorisation doubles the tiny layers, so the most compressed candidate (pruned and factorised)
is slower than pruning alone. A budget between the two was refused before, though trials that
prune alone meet it.
"""

import dataclasses

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import TensorDataset

from slimsearch.config import Budget, SearchConfig
from slimsearch.errors import InfeasibleBudgetError
from slimsearch.search.preflight import _measure, fast_candidates, preflight
from slimsearch.search.trial import TrialContext
from slimsearch.spaces import Space
from slimsearch.tasks import Task


class NodeBound(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 96, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Conv2d(96, 16, 1), nn.ReLU())
        self.chain = nn.Sequential(*[nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU()) for _ in range(100)])
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.chain(self.stem(x)), 1))


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    def split(n):
        return TensorDataset(torch.randn(n, 3, 48, 48, generator=generator), torch.randint(0, 10, (n,), generator=generator))

    train, val, test = split(64), split(32), split(32)
    task = Task(name="node-bound", teacher=NodeBound().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)
    config = SearchConfig.from_mapping({"task": "node-bound", "latency_budget": "1x",
                                        "space": {"families": ["prune", "lowrank"]},
                                        "latency": {"warmup": 10, "repeats": 80, "rounds": 4}})
    space = Space.discover(task.teacher, task.example_input, config.space)
    made = TrialContext.create(config, task, space, tmp_path_factory.mktemp("preflight"))
    yield made
    made.close()


def _with_budget(context, budget: str):
    return dataclasses.replace(context, config=dataclasses.replace(context.config, latency_budget=Budget.parse(budget)))


def test_a_budget_pruning_meets_is_not_refused_because_the_most_compressed_candidate_misses_it(context):
    space = context.space
    candidates = dict(fast_candidates(space))
    assert candidates["the most compressed candidate"] == space.extreme_candidate()
    pruned = candidates["prune alone at its extreme"]
    assert set(pruned.family("prune").values()) == {0.9} and set(pruned.family("lowrank").values()) == {1.0}
    # Five windows each, the median ratio: on a noisy 2-core machine one window put pruning alone at
    # 0.84 of the extreme candidate, where it measures 0.58-0.75 (its chain of tiny layers is half
    # the extreme's, which factorises every one of them into two); CI's machine once put the
    # medians of three at 0.84 too, so the gap asked for is a tenth.
    extremes = [_measure(context, space.extreme_candidate()) for _ in range(5)]
    alone = [_measure(context, pruned) for _ in range(5)]
    extreme_ratio = float(np.median([m.student.value_ms / m.teacher.value_ms for m in extremes]))
    pruned_ratio = float(np.median([m.speedup ** -1 for m in alone]))
    assert pruned_ratio < 0.9 * extreme_ratio, (pruned_ratio, extreme_ratio)  # the model does what it is built for
    # A third of the way from pruning alone to the extreme (geometrically): the extreme misses it unless
    # its window runs 7% fast or more, and pruning alone is refused only 14% slow or more (the 10% margin
    # on top), and only when every candidate timed after it misses too.
    budget = f"{pruned_ratio * (extreme_ratio / pruned_ratio) ** (1 / 3):.3f}x"
    teacher = preflight(_with_budget(context, budget), Console(quiet=True))
    timed = teacher["preflight_timed"]
    assert timed[0]["candidate"] == "the most compressed candidate" and len(timed) >= 2
    assert min(row["latency_ms"] / row["teacher_latency_ms"] for row in timed) < extreme_ratio


def test_a_budget_below_every_timed_candidate_is_refused_naming_the_fastest(context):
    with pytest.raises(InfeasibleBudgetError, match=r"cannot be met: the fastest of the \d+ candidates timed in this "
                                                    r"space \(.+\) measures .* allowed: a budget above"):
        preflight(_with_budget(context, "0.01x"), Console(quiet=True))
