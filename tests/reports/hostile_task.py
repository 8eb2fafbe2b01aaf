"""A user task whose teacher has a layer named like markup, to prove the report shows names as text."""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.tasks import Task
from slimsearch.tasks.digits import digits_splits

HOSTILE = "<script>alert(1)</script>"


class HostileNames(nn.Module):
    """Module names may hold anything but '.', so a user's layer can be called `<script>...`."""

    def __init__(self):
        super().__init__()
        self.add_module(HOSTILE, nn.Conv2d(1, 32, 3, padding=1))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.relu(getattr(self, HOSTILE)(x))), 1))


def hostile() -> Task:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name=HOSTILE, teacher=HostileNames().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)
