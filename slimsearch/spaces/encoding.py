"""Candidates as rows of numbers, so that thousands can be decoded, scored and compared at once.

One column per knob of the space (per layer, not per tied parameter), in the space's knob
order: a FloatRange knob holds its value, a Choice knob the index of its option. The proposers'
inner searches (search/proposals/) and the cost features (spaces/layout.py) work on these
matrices; only the few candidates actually proposed are turned back into `Candidate`s.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, FloatRange, Knob
from slimsearch.spaces.space import Space


class Encoding:
    def __init__(self, space: Space):
        self.space = space
        self.knobs: tuple[Knob, ...] = space.knobs
        self._column = {(knob.family, knob.target): index for index, knob in enumerate(self.knobs)}
        self.default = self.encode([space.default_candidate()])[0]

    @property
    def width(self) -> int:
        return len(self.knobs)

    def column(self, family: str, target: str) -> int | None:
        return self._column.get((family, target))

    def columns(self, family: str) -> list[int]:
        """The columns of one family's per-layer knobs (run-wide knobs such as the exit criterion excluded)."""
        return [index for index, knob in enumerate(self.knobs) if knob.family == family and knob.stage is not None]

    def encode(self, candidates: Iterable[Candidate]) -> np.ndarray:
        rows = []
        for candidate in candidates:
            choices = {family: candidate.family(family) for family in candidate.families}
            row = np.empty(self.width)
            for index, knob in enumerate(self.knobs):
                value = choices.get(knob.family, {}).get(knob.target, knob.default)
                row[index] = _code(knob, value)
            rows.append(row)
        return np.array(rows).reshape(len(rows), self.width)

    def decode(self, rows: np.ndarray) -> list[Candidate]:
        """Candidates for encoded rows; values are snapped onto each knob's domain first, and knobs
        the space ties (granularity stage / global) take their parameter's first member's value."""
        candidates = []
        for row in np.atleast_2d(self.snap(rows)):
            choices: dict[str, dict] = {}
            for knob, code in zip(self.knobs, row):
                choices.setdefault(knob.family, {})[knob.target] = _value(knob, code)
            candidates.append(self.space.canonical(Candidate(choices)))
        return candidates

    def snap(self, rows: np.ndarray) -> np.ndarray:
        """Rows moved onto the domains: FloatRange values clipped and on their step, Choice indices whole."""
        rows = np.array(rows, dtype=float, copy=True)
        for index, knob in enumerate(self.knobs):
            domain = knob.domain
            if isinstance(domain, FloatRange):
                column = np.clip(rows[..., index], domain.low, domain.high)
                if domain.step:
                    column = domain.low + np.round((column - domain.low) / domain.step) * domain.step
                rows[..., index] = np.round(np.minimum(column, domain.high), 6)
            else:
                rows[..., index] = np.clip(np.round(rows[..., index]), 0, len(domain.options) - 1)
        return rows

    def keys(self, rows: np.ndarray) -> list[bytes]:
        """A hashable key per row (after snapping): equal keys are the same candidate."""
        snapped = np.ascontiguousarray(self.snap(rows))
        return [row.tobytes() for row in np.atleast_2d(snapped)]


def _code(knob: Knob, value) -> float:
    if isinstance(knob.domain, FloatRange):
        return float(value)
    options = knob.domain.options
    if value in options:
        return float(options.index(value))
    # A hand-written candidate may hold a long form ({"bits": 8, ...}) or a value outside the
    # grid; the nearest option by equality of text is the honest reading, else the default.
    text = [str(option) for option in options]
    return float(text.index(str(value))) if str(value) in text else float(options.index(knob.default))


def _value(knob: Knob, code: float):
    if isinstance(knob.domain, FloatRange):
        return round(float(code), 6)
    return knob.domain.options[int(code)]


def option_values(knob: Knob) -> tuple:
    """The options of a Choice knob (empty for a range)."""
    return knob.domain.options if isinstance(knob.domain, Choice) else ()
