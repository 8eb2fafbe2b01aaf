"""A user task whose teacher has a layer named like markup, to prove the report shows names as text."""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.tasks import Task
from slimsearch.tasks.digits import digits_splits

HOSTILE = "<script>alert(1)</script>"
# Backticks end a Markdown code span and '[bold]' is rich markup: a name that must be escaped, not
# merely quoted, in the model card, and printed with markup off in the terminal.
BREAKOUT = "`<img src=x onerror=alert(1)>`[bold]"


class HostileNames(nn.Module):
    """Module names may hold anything but '.', so a user's layer can be called `<script>...`."""

    def __init__(self, layer_name: str = HOSTILE):
        super().__init__()
        self.layer_name = layer_name
        self.add_module(layer_name, nn.Conv2d(1, 32, 3, padding=1))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.relu(getattr(self, self.layer_name)(x))), 1))


def hostile() -> Task:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name=HOSTILE, teacher=HostileNames().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)


def breakout() -> Task:
    """The same, with a task and layer name that break out of Markdown code spans."""
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name=BREAKOUT, teacher=HostileNames(BREAKOUT).eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)
