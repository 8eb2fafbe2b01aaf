"""User tasks whose models break for some candidates, as real user models do."""

from __future__ import annotations

import time

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


class NoMiddleWidths(nn.Module):
    """A user model whose own code has no path for middle widths of its conv (40 to 56 of 64
    channels), as a hand-tuned kernel might not. The capability probe tries each knob at its
    extreme and at 0.5 only (8 and 32 channels here), so these candidates fail in their trials."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 64, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        if 40 <= self.conv.out_channels <= 56:
            raise RuntimeError(f"NoMiddleWidths has no path for {self.conv.out_channels} channels in conv")
        return self.head(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def picky() -> Task:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name="picky", teacher=NoMiddleWidths().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)


class RunsOutOfMemoryWhenPruned(nn.Module):
    """A user model that works at full width and runs out of memory when its conv is pruned (as a
    large model's candidate can on a small machine): the failure is the machine's, not the layer's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        if self.conv.out_channels < 32:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 16777216 bytes. Error code 12 (Cannot allocate memory)")
        return self.head(torch.flatten(self.pool(self.conv(x)), 1))


def fragile() -> Task:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name="fragile", teacher=NeedsSixteenChannels().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)


class Saboteur(nn.Module):
    """A user model that breaks in three ways at chosen widths of its conv, as broken candidates do.

    The teacher (64 channels) and the most pruned candidate (8) work; the test enqueues the widths
    below so that each failure happens exactly once, whatever the sampler would have proposed.
    """

    RAISES_AT, NAN_AT, HANGS_AT = 56, 48, 40

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 64, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        width = self.conv.out_channels
        if width == self.RAISES_AT:
            raise RuntimeError(f"Saboteur refuses to run with {width} channels")
        if width == self.HANGS_AT:
            time.sleep(3600)  # stuck, as a deadlocked data pipeline would be; the time limit must end it
        logits = self.head(torch.flatten(self.pool(self.relu(self.conv(x))), 1))
        if width == self.NAN_AT:
            logits = logits * float("nan")
        return logits


def saboteur() -> Task:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name="saboteur", teacher=Saboteur().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)
