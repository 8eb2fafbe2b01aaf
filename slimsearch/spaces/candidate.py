"""A Candidate: one point of the joint space, as plain versioned JSON.

`choices` maps a knob family to its per-target choices, e.g.
`{"prune": {"stages.0.0.conv1": 0.25}, "distill": {"temperature": 4.0, "alpha": 0.7}}`.
Later families slot in the same way (`"quant": {"head": {"bits": 8, "mode": "uniform"}}`), so
stored candidates stay readable as the space grows; `version` changes only if this shape does.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping

from slimsearch.errors import ConfigError

CANDIDATE_VERSION = 1


class Candidate:
    """Immutable, hashable, JSON-serialisable compression choices keyed by family and module name."""

    __slots__ = ("_choices", "_json")

    def __init__(self, choices: Mapping[str, Mapping[str, Any]]):
        plain = {str(family): {str(target): copy.deepcopy(value) for target, value in targets.items()}
                 for family, targets in choices.items()}
        self._choices = plain
        # The canonical text doubles as equality and hash key: two candidates are the same
        # exactly when they would be stored the same.
        self._json = json.dumps({"version": CANDIDATE_VERSION, "choices": plain}, sort_keys=True, separators=(",", ":"))

    def family(self, name: str) -> dict[str, Any]:
        """The choices of one family (a copy; empty if the family is not in this candidate)."""
        return copy.deepcopy(self._choices.get(name, {}))

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted(self._choices))

    @property
    def key(self) -> str:
        """A short stable id, e.g. for caches keyed by candidate."""
        return hashlib.sha256(self._json.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self._json)

    def to_json(self, *, indent: int | None = None) -> str:
        return self._json if indent is None else json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        version = data.get("version") if isinstance(data, Mapping) else None
        if version != CANDIDATE_VERSION or not isinstance(data.get("choices"), Mapping):
            raise ConfigError(
                f"not a slimsearch candidate of version {CANDIDATE_VERSION}: expected "
                f"{{'version': {CANDIDATE_VERSION}, 'choices': {{...}}}}, but got version={version!r}"
            )
        return cls(data["choices"])

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"candidate is not valid JSON: {error}") from None
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidate) and other._json == self._json

    def __hash__(self) -> int:
        return hash(self._json)

    def __repr__(self) -> str:
        return f"Candidate({self._choices!r})"
