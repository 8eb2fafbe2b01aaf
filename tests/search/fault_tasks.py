"""User tasks whose models break for some candidates, as real user models do."""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.tasks import Task
from slimsearch.tasks.digits import digits_splits


class NeedsSixteenChannels(nn.Module):
    """A user model with a hard requirement its author wrote down: the first conv keeps >= 16 channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        if self.conv.out_channels < 16:
            raise RuntimeError(f"NeedsSixteenChannels needs >= 16 channels in conv, got {self.conv.out_channels}")
        return self.head(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def fragile() -> Task:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name="fragile", teacher=NeedsSixteenChannels().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)
