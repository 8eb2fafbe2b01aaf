"""The joint search space of one model: every family's knobs, tied by the chosen granularity."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimsearch.config import SpaceConfig, TargetConfig
from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Domain, FloatRange, Knob, Untouched, create_family


@dataclass(frozen=True)
class Parameter:
    """One value the sampler chooses; it sets every knob in `members` (tied knobs share it)."""

    name: str
    domain: Domain
    members: tuple[Knob, ...]


def _tie_name(knob: Knob, granularity: str) -> str:
    if knob.stage is None or granularity == "layer":
        return f"{knob.family}:{knob.target}"
    if granularity == "stage":
        return f"{knob.family}:@{knob.stage}"
    return f"{knob.family}:@all"


@dataclass(frozen=True)
class Space:
    knobs: tuple[Knob, ...]
    untouched: tuple[Untouched, ...]
    granularity: str = "layer"

    @classmethod
    def discover(cls, model: nn.Module, example_input: torch.Tensor, settings: SpaceConfig | None = None, *,
                 batch_size: int = 1, target: TargetConfig | None = None) -> Space:
        """Ask every enabled family which knobs it offers on `model`, served on `target` (its batch
        size overrides `batch_size`; without a target, half precision is not offered)."""
        settings = settings or SpaceConfig()
        batch_size = target.batch_size if target is not None else batch_size
        knobs: list[Knob] = []
        untouched: list[Untouched] = []
        for name in settings.families:
            if name == "exits" and batch_size != 1:
                # A batch leaves together or not at all: exits pay off one sample at a time.
                untouched.append(Untouched(name, "*", f"early exits serve one sample at a time; target.batch_size is {batch_size}"))
                continue
            family_settings = settings
            if name == "precision":
                searched = settings.searched_precisions(target) if target is not None else ("float32",)
                if searched == ("float32",):
                    where = "no target was given" if target is None else f"the target is {target.runtime} on {target.device}"
                    untouched.append(Untouched(name, "*", f"half precision is searched on CUDA targets with runtime torch, "
                                                          f"torch-compile or cudagraph; {where}"))
                    continue
                family_settings = dataclasses.replace(settings, precisions=searched)
            found, skipped = create_family(name).discover(model, example_input, family_settings)
            knobs += found
            untouched += skipped
        return cls(tuple(knobs), tuple(untouched), settings.granularity)

    def without(self, excluded: list[Untouched] | tuple[Untouched, ...]) -> Space:
        """This space with the named knobs left out, each recorded as untouched with its reason."""
        dropped = {(u.family, u.target) for u in excluded}
        knobs = tuple(k for k in self.knobs if (k.family, k.target) not in dropped)
        return Space(knobs, (*self.untouched, *excluded), self.granularity)

    def narrowed(self, ceilings: dict[tuple[str, str], float]) -> Space:
        """This space with the named range knobs' highest value (and extreme) lowered to the ceiling."""
        knobs = []
        for knob in self.knobs:
            high = ceilings.get((knob.family, knob.target))
            if high is not None and isinstance(knob.domain, FloatRange):
                domain = FloatRange(knob.domain.low, high, knob.domain.step)
                knob = dataclasses.replace(knob, domain=domain, extreme=high, default=min(knob.default, high))
            knobs.append(knob)
        return Space(tuple(knobs), self.untouched, self.granularity)

    def parameters(self) -> list[Parameter]:
        tied: dict[str, list[Knob]] = {}
        for knob in self.knobs:
            tied.setdefault(_tie_name(knob, self.granularity), []).append(knob)
        return [Parameter(name, members[0].domain, tuple(members)) for name, members in tied.items()]

    def candidate(self, values: dict[str, Any]) -> Candidate:
        """The candidate for sampler values keyed by parameter name (missing ones take defaults)."""
        choices: dict[str, dict[str, Any]] = {}
        for parameter in self.parameters():
            for knob in parameter.members:
                value = values.get(parameter.name, knob.default)
                if isinstance(knob.domain, FloatRange) and knob.domain.step:
                    value = round(value, 6)  # 0.7000000000000001 from the step grid reads as 0.7
                choices.setdefault(knob.family, {})[knob.target] = value
        return Candidate(choices)

    def params(self, candidate: Candidate) -> dict[str, Any]:
        """Sampler values (by parameter name) that reproduce `candidate`: tied knobs take their
        parameter's first member's value, missing ones their default."""
        params = {}
        for parameter in self.parameters():
            knob = parameter.members[0]
            params[parameter.name] = candidate.family(knob.family).get(knob.target, knob.default)
        return params

    def canonical(self, candidate: Candidate) -> Candidate:
        """`candidate` as this space can express it (ties applied, defaults filled in)."""
        return self.candidate(self.params(candidate))

    def default_candidate(self) -> Candidate:
        """No compression: the teacher's architecture with default fine-tuning knobs."""
        return self.candidate({})

    def extreme_candidate(self) -> Candidate:
        """The most compressed candidate: if it misses a budget, every candidate does."""
        return Candidate(self._choices(lambda knob: knob.extreme))

    def _choices(self, pick) -> dict[str, dict[str, Any]]:
        choices: dict[str, dict[str, Any]] = {}
        for knob in self.knobs:
            choices.setdefault(knob.family, {})[knob.target] = pick(knob)
        return choices

    def signature(self) -> str:
        """A fingerprint of the knobs and their domains; a study only accepts trials of one space."""
        described = [[k.family, k.target, repr(k.domain)] for k in self.knobs] + [self.granularity]
        return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]

    def describe(self) -> list[dict[str, Any]]:
        rows = [{"family": k.family, "target": k.target, "stage": k.stage, "domain": _domain_text(k.domain)}
                for k in self.knobs]
        rows += [{"family": u.family, "target": u.target, "stage": None, "domain": f"untouched: {u.reason}"}
                 for u in self.untouched]
        return rows


def _domain_text(domain: Domain) -> str:
    if isinstance(domain, FloatRange):
        step = f" step {domain.step:g}" if domain.step else ""
        return f"[{domain.low:g}, {domain.high:g}]{step}"
    return "{" + ", ".join(map(str, domain.options)) + "}"
