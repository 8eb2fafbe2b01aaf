"""What the proposers know about a search, refreshed from the study before every proposal.

The model's layout (spaces/layout.py), the genome (spaces/genome.py), the latency and accuracy
predictors (search/predictors.py) refitted on every measurement so far, the budget as a ratio
to the teacher's latency, and the objective space in which candidates are compared: accuracy
loss relative to the teacher, log10 latency ratio and log10 size ratio, all minimised (the
bench's hypervolume uses the same normalisation, bench/search_quality.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimsearch.search.pareto import hypervolume, hypervolume_improvements
from slimsearch.search.predictors import (AccuracyPredictor, Damage, LatencyObservation, LatencyPredictor,
                                          TrialSeconds)
from slimsearch.search.proposals.base import History
from slimsearch.search.proposals.trust import TRUST_LATENCY_STEP, TRUST_LOSS, TRUST_SIZE_STEP, KnobLevels, Limits, TrustRegion
from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.genome import Genome
from slimsearch.spaces.layout import Layout

# Models losing more than this share of the teacher's accuracy add nothing to the hypervolume
# the proposers maximise.
LOSS_REFERENCE = 0.10
# A failure rules out what is nearly as fast and as small as it, too: measured latency moves by
# several percent between runs, and a near twin of a candidate that fine-tuned to 69% (0.2%
# slower by prediction) fine-tuned to 18% on digits.
FAILURE_MARGIN = 1.1
# The least predicted hypervolume gain worth a trial, relative to the front's own.
MIN_GAIN = 0.02


@dataclass
class Predicted:
    accuracy: np.ndarray
    latency_ratio: np.ndarray
    lower_bound_ratio: np.ndarray  # an early-exit candidate with every sample at its first exit
    size_bytes: np.ndarray

    def record(self, index: int, **extra: float) -> dict[str, float]:
        """One candidate's predictions, as a trial keeps them (`predicted` user attr)."""
        return {"accuracy": float(self.accuracy[index]), "latency_ratio": float(self.latency_ratio[index]),
                "lower_bound_ratio": float(self.lower_bound_ratio[index]),
                "size_bytes": float(self.size_bytes[index]), **extra}


class Knowledge:
    def __init__(self, layout: Layout, priors: dict[str, Any], *, budget_ratio: float, teacher: dict[str, Any]):
        self.layout, self.encoding = layout, layout.encoding
        sensitivity = priors.get("sensitivity") or {}
        self.genome = Genome(self.encoding, sensitivity)
        self.latency = LatencyPredictor(layout)
        self.seconds = TrialSeconds(layout)
        teacher_accuracy = float(teacher.get("val_accuracy", sensitivity.get("teacher_accuracy", 1.0)))
        self.accuracy = AccuracyPredictor(Damage(layout, sensitivity), teacher_accuracy)
        self.teacher_accuracy = teacher_accuracy
        self.teacher_size = float(teacher.get("size_bytes") or layout.teacher["size_bytes"][0])
        self.budget_ratio = budget_ratio
        self.levels = KnobLevels(self.encoding)
        probes = priors.get("latency_probes", [])
        rows = self.encoding.encode([Candidate.from_dict(probe["candidate"]) for probe in probes])
        self._probes = [LatencyObservation(row, float(probe["ratio"])) for row, probe in zip(rows, probes)]

    # --- fitting -------------------------------------------------------------------------------
    def refit(self, history: History) -> None:
        self.latency.fit(self.latency_observations(history))
        # The accuracy model predicts what the configured fine-tune reaches: long ones would blur it,
        # and a screened-out trial's short fine-tune is only a lower bound on it. Counted as the
        # answer, on resnet18 (where models at 10-22% after the short fine-tune reached 95-99% after
        # the full one) one screened out at 14%, pruned by 0.7-0.85 beside the warm start's uniform
        # 0.8 (23%, then 97%), pulled the prediction for that warm-start model to 61%, and no walk
        # went on from it. The trust region still keeps clear of what was screened out (failures).
        trained = history.trained(standard=True, screened=False)
        self.accuracy.fit(np.array([r.row for r, _ in trained]).reshape(len(trained), self.encoding.width),
                          np.array([accuracy for _, accuracy in trained]))
        # Trial times of the configured fine-tune run to its end (screened-out trials stop early).
        timed = [r for r in history.fine_tuned() if r.finetune_scale == 1.0 and r.seconds]
        self.seconds.fit(np.array([r.row for r in timed]).reshape(len(timed), self.encoding.width),
                         np.array([r.seconds for r in timed]))

    def latency_observations(self, history: History) -> list[LatencyObservation]:
        """Every latency measured so far: the teacher's own (1 by definition: the priors' probes are
        all compressed, and the candidates least compressed are where a fit on them alone strays
        furthest), the priors' probes, each trial's first measurement, and an early-exit trial's
        final one with the shares of samples its exits took."""
        observations = [LatencyObservation(self.encoding.default, 1.0), *self._probes]
        for record in history.records:
            if record.row is None:
                continue
            if record.first_latency_ratio is not None:
                observations.append(LatencyObservation(record.row, float(record.first_latency_ratio)))
            if record.exit_shares and record.fine_tuned and record.latency_ratio is not None:
                observations.append(LatencyObservation(record.row, record.latency_ratio,
                                                       self.path_shares(record.row, record.exit_shares)))
        return observations

    def path_shares(self, row: np.ndarray, shares: dict[str, float]) -> np.ndarray:
        """A trial's recorded exit shares (live exits by stage, then "final") as a vector over the layout's paths."""
        vector = np.zeros(len(self.layout.exits) + 1)
        stages = {self.encoding.knobs[point.column].target: position for position, point in enumerate(self.layout.exits)}
        for name, share in shares.items():
            vector[stages.get(name, len(self.layout.exits))] += float(share)
        return vector

    # --- predicting ----------------------------------------------------------------------------
    def predict(self, rows: np.ndarray) -> Predicted:
        rows = np.atleast_2d(rows)
        features = self.layout.features(rows)
        return Predicted(accuracy=self.accuracy.predict(rows),
                         latency_ratio=self.latency.predict(rows, features=features),
                         lower_bound_ratio=self.latency.predict(rows, lower_bound=True, features=features),
                         size_bytes=features["size_bytes"])

    def latency_and_accuracy(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`predict`'s latency ratio and accuracy alone: what a greedy walk weighs each step by."""
        rows = np.atleast_2d(rows)
        return self.latency.predict(rows), self.accuracy.predict(rows)

    def objectives(self, accuracy, latency_ratio, size_bytes) -> np.ndarray:
        """(n, 3), all minimised: relative accuracy loss, log10 latency ratio, log10 size ratio."""
        accuracy = np.asarray(accuracy, dtype=float)
        loss = np.maximum(0.0, 1.0 - accuracy / self.teacher_accuracy)
        return np.column_stack([loss, np.log10(np.maximum(np.asarray(latency_ratio, dtype=float), 1e-9)),
                                np.log10(np.maximum(np.asarray(size_bytes, dtype=float), 1.0) / self.teacher_size)])

    @property
    def reference(self) -> np.ndarray:
        return np.array([LOSS_REFERENCE, math.log10(max(self.budget_ratio, 1e-9)), 0.0])

    def front_points(self, history: History) -> np.ndarray:
        """The objective points of the fine-tuned, feasible trials (dominated ones included: they add nothing)."""
        records = [r for r in history.fine_tuned() if r.feasible and r.latency_ratio and r.size_bytes]
        if not records:
            return np.zeros((0, 3))
        return self.objectives([r.accuracy for r in records], [r.latency_ratio for r in records],
                               [r.size_bytes for r in records])

    def pending_points(self, history: History) -> np.ndarray:
        """Predicted points of the trials still running or queued: counted as if already measured,
        so parallel workers do not all chase the same gap."""
        rows = [r.row for r in history.records if r.state in ("RUNNING", "WAITING") and r.row is not None]
        if not rows:
            return np.zeros((0, 3))
        predicted = self.predict(np.array(rows))
        return self.objectives(predicted.accuracy, predicted.latency_ratio, predicted.size_bytes)

    # --- the trust region (search/proposals/trust.py) -------------------------------------------
    def trust_region(self, history: History, *, open_start: bool = False) -> TrustRegion:
        """Where a proposal may go now: a step past the accurate models measured so far (the budget
        and the teacher before any), clear of the models that fine-tuned badly. `open_start`: with
        no accurate model yet, neither knob limits nor objective floors on what it contains (the
        failures still hold; the latency floor still bounds the walks' targets), for the allocation's walks from the teacher, which are ordered by measured
        sensitivity: a step from the teacher (pruning by 0.25, int8) may not reach the budget,
        int8 alone is below the size floor, and on digits the size phase's int8 took every walk
        (to 0.75x, predicted 0.43x after it) below the latency floor of 0.45x."""
        good = self.accurate(history)
        # The latency side starts from the budget: a proposal must meet it anyway.
        latency = min([1.0, self.budget_ratio] + [float(r.latency_ratio) for r in good])
        size = min([1.0] + [float(r.size_bytes) / self.teacher_size for r in good])
        limits = self.levels.limits(np.array([r.row for r in good]).reshape(len(good), self.encoding.width))
        failures = self.failures(history, limits, good)
        opened = open_start and not good
        return TrustRegion(self.levels, None if opened else limits, latency_floor=latency * TRUST_LATENCY_STEP,
                           size_floor=0.0 if opened else size * TRUST_SIZE_STEP, failures=failures,
                           teacher_size=self.teacher_size, failure_margin=FAILURE_MARGIN, open=opened)

    def failures(self, history: History, limits: Limits, accurate: list) -> np.ndarray:
        """(latency ratio, size ratio) of the models that lost more than LOSS_REFERENCE (fine-tuned
        to the end, or screened out after the short fine-tune below that: on resnet18 an
        allocation screened out at 75% was followed by its near twin, which screened out at 77%)
        and that say something about the region: inside its knob limits (what failed elsewhere
        failed for the kind of compression it took, not the amount: the sampler's 2-bit k-means
        models), and not beaten on both latency and size by an accurate model (on digits a sampled
        failure at 0.41x and 84 kB ruled out every faster, smaller model, the warm start's
        accurate 0.26x and 84 kB one among them)."""
        floor = self.teacher_accuracy * (1.0 - LOSS_REFERENCE)
        failed = [r for r, accuracy in history.trained() if r.latency_ratio and r.size_bytes and accuracy < floor]
        if failed:
            inside = self.levels.within(np.array([r.row for r in failed]), limits)
            failed = [r for r, keep in zip(failed, inside) if keep and not any(
                a.latency_ratio <= r.latency_ratio and a.size_bytes <= r.size_bytes for a in accurate)]
        bad = [(float(r.latency_ratio), float(r.size_bytes) / self.teacher_size) for r in failed]
        return np.array(bad).reshape(len(bad), 2)

    def accurate(self, history: History) -> list:
        """The fine-tuned models within TRUST_LOSS of the teacher's accuracy: the region's anchors."""
        return [r for r in self._measured(history) if r.accuracy >= self.teacher_accuracy * (1.0 - TRUST_LOSS)]

    @staticmethod
    def _measured(history: History) -> list:
        return [r for r in history.fine_tuned() if r.latency_ratio and r.size_bytes]

    # --- what a proposal is worth -----------------------------------------------------------------
    def expected_gains(self, history: History, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The hypervolume each objective point is predicted to add to the front of fine-tuned,
        feasible trials, the running and queued trials' predicted points counted in (so parallel
        workers spread out), as a share of that front's own hypervolume. With no front yet, as a
        share of the largest gain among `points`: the best is worth a trial, and the others rank
        by what they would add (counted as equal, the first proposal of a search without a warm
        start went to the budget's edge, where a model adds next to nothing on the latency axis)."""
        front = np.vstack([self.front_points(history), self.pending_points(history)])
        gains = hypervolume_improvements(front, points, self.reference, seed=int(rng.integers(2**31)))
        volume = hypervolume(front.tolist(), self.reference.tolist()) if len(front) else 0.0
        if volume <= 0:
            volume = float(np.max(gains, initial=0.0))
        return gains / volume if volume > 0 else np.zeros(len(gains))

    def best_per_second(self, gains: np.ndarray, rows: np.ndarray) -> int | None:
        """The index of the row worth a trial (`worth_a_trial`) that is expected to add the most per
        predicted second of its trial, or None when none is worth one: in a search bounded by time,
        the rate at which the front grows. On digits the proposers' lightly pruned, separable,
        mixed-precision models took 10-13 s a trial against the hand grid's 3-9 s for pruned int8
        ones, and a 120 s search ran 8-12 trials to the grid's 16."""
        worth = self.worth_a_trial(gains)
        if not worth.any():
            return None
        rates = np.asarray(gains, dtype=float) / self.seconds.predict(rows)
        return int(np.argmax(np.where(worth, rates, -np.inf)))

    @staticmethod
    def worth_a_trial(relative_gains: np.ndarray) -> np.ndarray:
        """Whether a predicted gain (a share of the front's hypervolume) pays for a trial: below
        MIN_GAIN, proposals on digits fine-tuned to 12-70%, or were near twins of front models
        differing in what the predictors cannot tell apart (the distillation knobs)."""
        return np.asarray(relative_gains) > MIN_GAIN

    def feasible(self, predicted: Predicted) -> np.ndarray:
        return predicted.latency_ratio <= self.budget_ratio
