"""What every proposer shares: a Proposal, the Proposer interface, and the study as History.

A proposer looks at the study so far and offers one candidate it has not seen there. The
engine (proposals/engine.py) asks the proposers in turn; the Optuna sampler that hosts them
(search/samplers.py) turns the chosen candidate into the trial's parameters and records its
origin. So the driver, the trial and the backends never know which proposer produced a trial.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from slimsearch.search.fidelity import SCREEN_ATTR
from slimsearch.search.origins import GENOME_ATTR, PREDICTED_ATTR, finetune_scale, origin_of
from slimsearch.search.storage import FIRST_LATENCY_ATTR
from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.encoding import Encoding


@dataclass(frozen=True)
class Proposal:
    candidate: Candidate
    origin: str
    # What the proposer expected of it ({"accuracy", "latency_ratio", "size_bytes"}), if it predicted;
    # kept on the trial so the predictors' errors can be read against what was measured.
    predicted: dict[str, float] | None = None
    genome: dict[str, Any] | None = None  # the sampler's genes, when it sampled the genome
    finetune_scale: float = 1.0  # a long fine-tune's factor (search/proposals/long_finetune.py)


@dataclass(frozen=True)
class Record:
    """One trial of the study as the proposers see it."""

    number: int
    state: str  # COMPLETE, RUNNING, WAITING, FAIL, ...
    origin: str
    row: np.ndarray | None  # the encoded candidate (None if it was never sampled)
    key: str | None  # Candidate.key
    accuracy: float | None  # validation accuracy of a fine-tuned trial
    screened_accuracy: float | None  # ... of one screened out after its short fine-tune (search/fidelity.py)
    latency_ratio: float | None  # the recorded latency over the teacher's in the same window
    first_latency_ratio: float | None  # its first measurement (an exit model's lower bound)
    size_bytes: float | None
    exit_shares: dict[str, float] | None  # live exit -> share of samples leaving there, "final" last
    feasible: bool
    fine_tuned: bool  # fine-tuned to the end (not stopped by latency-first or screening)
    genome: dict[str, Any] | None
    values: tuple[float, ...] | None
    violation: float  # the latency constraint (<= 0: within budget)
    params: dict[str, Any]
    predicted: dict[str, float] | None = None  # what its proposer expected (Proposal.predicted)
    finetune_scale: float = 1.0  # how many times the configured fine-tune it got
    seconds: float | None = None  # wall time of a finished trial


@dataclass
class History:
    records: list[Record]

    @property
    def tried(self) -> set[str]:
        """Keys of every candidate the study holds, whatever its state: none is proposed twice."""
        return {record.key for record in self.records if record.key is not None}

    def fine_tuned(self) -> list[Record]:
        return [r for r in self.records if r.fine_tuned and r.row is not None and r.accuracy is not None]

    def trained(self, *, standard: bool = False, screened: bool = True) -> list[tuple[Record, float]]:
        """(record, accuracy) of every trial that was fine-tuned at all: to the end, or (`screened`)
        screened out after its short fine-tune, whose accuracy then understates what the full one
        would reach; `standard`: only those given the configured fine-tune, not a long one."""
        return [(r, r.accuracy if r.accuracy is not None else r.screened_accuracy) for r in self.records
                if r.row is not None and (r.accuracy is not None or (screened and r.screened_accuracy is not None))
                and not (standard and r.finetune_scale != 1.0)]

    def count(self, origin: str) -> int:
        """Trials `origin` proposed (the trial being proposed for, with no candidate yet, is not one)."""
        return sum(1 for record in self.records if record.origin == origin and record.row is not None)


class Proposer(abc.ABC):
    """Proposes one candidate at a time, or None when it has nothing (more) to offer now."""

    origin: ClassVar[str]

    @abc.abstractmethod
    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        """A candidate whose key is not in `history.tried`, or None."""


def read_history(trials, encoding: Encoding) -> History:
    """The study's trials (Optuna FrozenTrials) as Records."""
    records = []
    for trial in trials:
        attrs = trial.user_attrs
        data = attrs.get("candidate")
        candidate = Candidate.from_dict(data) if isinstance(data, dict) else None
        if candidate is None and trial.params:  # queued, or sampled but not yet run: from its params
            candidate = encoding.space.candidate(trial.params)
        row = encoding.encode([candidate])[0] if candidate is not None else None
        values = tuple(trial.values) if trial.values is not None else None
        complete = trial.state.name == "COMPLETE"
        stopped = attrs.get("stopped_early")
        teacher_ms = attrs.get("teacher_latency_ms")
        ratio = values[1] / teacher_ms if complete and values and teacher_ms else None
        shares = attrs.get("exit_shares")
        screen = attrs.get(SCREEN_ATTR) if isinstance(attrs.get(SCREEN_ATTR), dict) else {}
        records.append(Record(
            number=trial.number, state=trial.state.name, origin=origin_of(attrs), row=row,
            key=candidate.key if candidate is not None else None,
            accuracy=values[0] if complete and values and not stopped else None,
            screened_accuracy=values[0] if complete and values and screen.get("promoted") is False else None,
            latency_ratio=ratio, first_latency_ratio=attrs.get(FIRST_LATENCY_ATTR),
            size_bytes=values[2] if complete and values else None,
            exit_shares=dict(shares) if isinstance(shares, dict) else None,
            feasible=bool(attrs.get("feasible")), fine_tuned=complete and not stopped,
            genome=attrs.get(GENOME_ATTR), values=values, violation=float(attrs.get("violation", 0.0)),
            params=dict(trial.params),
            predicted=attrs.get(PREDICTED_ATTR) if isinstance(attrs.get(PREDICTED_ATTR), dict) else None,
            finetune_scale=finetune_scale(attrs),
            seconds=trial.duration.total_seconds() if trial.duration is not None else None))
    return History(records)
