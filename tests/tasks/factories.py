"""User task factories for tests of `package.module:function` task names."""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.tasks import Task
from slimsearch.tasks.digits import digits_splits

not_callable = 42


def good() -> Task:
    """A tiny digits task with an untrained linear teacher: builds in well under a second."""
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    return Task(name="tiny-digits", teacher=teacher, train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10, info={"dataset": "digits"})


def bad_return() -> int:
    return 42


def raises() -> Task:
    raise RuntimeError("the user's data is missing")
