"""The trust region the predictor and the allocation propose in (NetAdapt's progressive shrinking).

The accuracy model adds up what single layers lose, measured before any fine-tuning
(search/predictors.py). Near the models a search has measured that sum ranks candidates well;
far past them it is optimistic in ways no calibration on a dozen trials corrects. On digits,
with a few accurate models measured, the predictor's favourites fine-tuned to 50-65% where it
expected 97-99%: groups pruned by 0.9 because their 0.5 probe barely mattered, every layer at 2
bits because one layer at 2 bits costs nothing untuned, six of seven convs separable at once.

So a proposal may go only a step past what one accurate model (fine-tuned, within TRUST_LOSS
of the teacher's accuracy) has already shown to work: it must lie in the neighbourhood of at
least one such model (or of the teacher), knob by knob:
- each prune group's ratio at most PRUNE_STEP above that model's ratio for it;
- each layer at most one bit-width step below that model's width for it (float, then 8 bits
  (int8 or half), then 4, then 2);
- at most one conv more made separable, and one layer more factorised, than that model had.
The region is the union of these neighbourhoods, not a box around all of them: a box would let a
proposal take one accurate model's hard pruning together with another's 2-bit layers and a
third's separable convs, which none of them showed to survive together (on digits such
combinations fine-tuned to 40-65%).
On the objectives, a proposal is at most 1/TRUST_LATENCY_STEP times as fast and 1/TRUST_SIZE_STEP
times as small as the fastest and the smallest accurate model (the budget and the teacher before
any), and never both (nearly: FAILURE_MARGIN) as fast and as small as a fine-tuned model that lost
more than LOSS_REFERENCE inside the knob neighbourhoods and that no accurate model has beaten on
both latency and size since (Knowledge.failures says why).
The region widens as compressed models prove accurate; the warm start's points widen it at once.
The sampler is not bound by it: it explores, and multi-fidelity screening stops its misses early.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimsearch.spaces.quant import decode_choice

PRUNE_STEP = 0.25
# How close to the teacher a model must come to anchor the region. The hypervolume counts models
# within 10% (LOSS_REFERENCE), but one 10% down is no proof that its compression is safe to go past:
# in the demo a sampled model at 89.7% (four separable convs, 2-bit k-means, pruning 0.85) let the
# predictor propose five separable convs with pruning 0.9, which fine-tuned to 60%.
TRUST_LOSS = 0.04
TRUST_LATENCY_STEP = 0.6
TRUST_SIZE_STEP = 0.4


def width_step(bits: int) -> int:
    """How many bit-width steps below float: 0 for 32, 1 for 16 and 8, 2 for 4 (and 5-7), 3 for 2-3."""
    if bits >= 32:
        return 0
    if bits >= 8:
        return 1
    return 2 if bits >= 4 else 3


@dataclass
class Limits:
    """One neighbourhood per row (an accurate model, or the teacher): a candidate is inside the
    trust region when it lies within every limit of at least one row."""

    prune: np.ndarray  # (models, prune columns): the highest ratio allowed
    widths: np.ndarray  # (models, quant columns): the most bit-width steps below float allowed
    separable: np.ndarray  # (models,): convs made separable, at most
    lowrank: np.ndarray  # (models,): layers factorised, at most


@dataclass
class TrustRegion:
    """The whole region for one proposal, built once from the study (Knowledge.trust_region):
    the objective floors, the knob neighbourhoods and the failures to keep clear of."""

    levels: KnobLevels
    limits: Limits | None  # None when open
    latency_floor: float  # a ratio to the teacher's latency
    size_floor: float  # a ratio to the teacher's bytes
    failures: np.ndarray  # (models, 2): latency ratio and size ratio of models that fine-tuned badly
    teacher_size: float
    failure_margin: float
    open: bool = False  # before any accurate model (Knowledge.trust_region's `open_start`): failures only

    def contains(self, rows: np.ndarray, latency_ratio: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """Which candidates (`rows`, their predicted latency ratios and bytes) lie inside."""
        size = np.asarray(size_bytes, dtype=float) / self.teacher_size
        latency = np.asarray(latency_ratio, dtype=float)
        inside = np.ones(len(latency), dtype=bool)
        if not self.open:
            inside &= (latency >= self.latency_floor) & (size >= self.size_floor)
            inside &= self.levels.within(rows, self.limits)
        for failed_latency, failed_size in self.failures:  # (nearly) as fast and as small as a failure
            inside &= ~((latency <= failed_latency * self.failure_margin) & (size <= failed_size * self.failure_margin))
        return inside


class KnobLevels:
    """How far each candidate row compresses, knob by knob, in the terms the limits use."""

    def __init__(self, encoding):
        self.encoding = encoding
        knobs = encoding.knobs
        self.prune = encoding.columns("prune")
        self.quant = encoding.columns("quant")
        self.separable = encoding.columns("separable")
        self.lowrank = encoding.columns("lowrank")
        # Lookup tables from a column's option index to its level.
        self._steps = [np.array([width_step(decode_choice(o)[0]) for o in knobs[c].domain.options]) for c in self.quant]
        self._made_separable = [np.array([o is True for o in knobs[c].domain.options]) for c in self.separable]
        self._factorised = [np.array([float(o) < 1.0 for o in knobs[c].domain.options]) for c in self.lowrank]

    def levels(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = np.atleast_2d(rows)
        prune = rows[:, self.prune] if self.prune else np.zeros((len(rows), 0))
        widths = _lookup(rows, self.quant, self._steps)
        separable = _lookup(rows, self.separable, self._made_separable).sum(axis=1)
        lowrank = _lookup(rows, self.lowrank, self._factorised).sum(axis=1)
        return prune, widths, separable, lowrank

    def limits(self, accurate_rows: np.ndarray) -> Limits:
        """A step past each of `accurate_rows`, and past the teacher."""
        prune, widths, separable, lowrank = self.levels(np.vstack([self.encoding.default[None, :], accurate_rows]))
        return Limits(prune=prune + PRUNE_STEP, widths=widths + 1, separable=separable + 1, lowrank=lowrank + 1)

    def within(self, rows: np.ndarray, limits: Limits) -> np.ndarray:
        prune, widths, separable, lowrank = self.levels(rows)
        inside = np.zeros(len(prune), dtype=bool)
        # One neighbourhood at a time: (rows x columns) at a time stays small for big pools.
        for model in range(len(limits.separable)):
            inside |= (np.all(prune <= limits.prune[model] + 1e-9, axis=1) & np.all(widths <= limits.widths[model], axis=1)
                       & (separable <= limits.separable[model]) & (lowrank <= limits.lowrank[model]))
        return inside


def _lookup(rows: np.ndarray, columns: list[int], tables: list[np.ndarray]) -> np.ndarray:
    if not columns:
        return np.zeros((len(rows), 0), dtype=int)
    return np.column_stack([table[rows[:, column].astype(int)] for column, table in zip(columns, tables)])
