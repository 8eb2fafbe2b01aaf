"""Knobs, their value domains, and the registry of knob families.

A family (pruning, distillation, later quantization, ...) looks at a model and says which
knobs it offers there and which layers it cannot touch and why. How a choice is *applied*
lives in `slimsearch.techniques`; how it is *sampled* lives in the sampler adapters.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from slimsearch.errors import ConfigError


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"FloatRange needs low <= high, but got low={self.low}, high={self.high}")


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]


Domain = FloatRange | Choice


@dataclass(frozen=True)
class Knob:
    """One searchable choice.

    `target` is a module name (per-layer knobs) or a run-wide name such as `temperature`.
    `default` leaves the model as the teacher has it; `extreme` compresses it the most (used to
    check up front that a budget can be met at all). `stage` groups per-layer knobs for the
    `stage` granularity; it is None for run-wide knobs, which are never tied.
    """

    family: str
    target: str
    domain: Domain
    default: Any
    extreme: Any
    stage: str | None = None


@dataclass(frozen=True)
class Untouched:
    """A layer a family cannot change, and why (shown to the user, never silently dropped)."""

    family: str
    target: str
    reason: str


class KnobFamily(abc.ABC):
    """A family of knobs. Subclasses set `name` and implement `discover`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def discover(self, model: nn.Module, example_input: torch.Tensor, settings: Any) -> tuple[list[Knob], list[Untouched]]:
        """The knobs this family offers on `model`, and the layers it leaves alone with reasons."""


_FAMILIES: dict[str, type[KnobFamily]] = {}


def register_family(cls: type[KnobFamily]) -> type[KnobFamily]:
    if cls.name in _FAMILIES:
        raise ValueError(f"knob family {cls.name!r} is already registered")
    _FAMILIES[cls.name] = cls
    return cls


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def create_family(name: str) -> KnobFamily:
    if name not in _FAMILIES:
        raise ConfigError(
            f"knob family {name!r} is not available in this version; available: {', '.join(list_families())}"
        )
    return _FAMILIES[name]()
