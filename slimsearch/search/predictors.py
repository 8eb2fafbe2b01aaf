"""Cheap predictors of latency and accuracy, refitted as trials land (OFA / APQ style).

Both take encoded candidate rows (spaces/encoding.py), so an inner search can score thousands
of candidates in milliseconds; neither ever replaces a measurement on the front.

- `LatencyPredictor`: the latency ratio to the teacher (timed in the same window) as a
  non-negative linear function of the candidate's cost features (spaces/layout.py: dense float
  and int8 multiply-accumulates, depthwise work, op counts, activations, int8 inputs, exit
  segments) and of its weight bytes beyond a cache size the fit picks (`CACHE_BYTES`), fitted
  by non-negative least squares to every latency the search has measured
  (the priors' probes, each trial's first measurement, each fine-tuned trial's final one). An
  early-exit model's latency is the mean over its paths (leaving at each live exit, or running
  to the end), weighted by the share of samples taking each; shares come from the exit models
  measured so far (`ExitShares`); times one fitted factor, as exit models are timed as segments
  and a runner, sample by sample, where the same layers cost less than in one graph.
- `TrialSeconds`: how long a candidate's trial takes, from the work it trains, fitted to the
  finished trials; proposers weigh what a candidate would add by what it costs.
- `AccuracyPredictor`: the fine-tuned accuracy loss as a non-negative function of the layer
  sensitivity pass's untuned drops summed per family (an additive model, as in HAQ and
  AutoQuantize), calibrated on the fine-tuned trials: fine-tuning recovers most of a small
  damage and little of a large one, so the loss is fitted as a0 * D + a1 * D^2 per family sum.

`holdout_errors` reports each predictor's error against measurement on candidates it was not
fitted on: the latency's median absolute percentage error and the accuracy's rank correlation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from slimsearch.spaces.layout import LATENCY_FEATURES, Layout
from slimsearch.spaces.quant import decode_choice

# Ridge pull towards the prior's weights, in units of one observation: with a handful of
# measurements the fit stays near "latency follows work", and data takes over as it comes.
LATENCY_PRIOR_WEIGHT = 0.3
# Before any exit model was measured: the share of the samples reaching an exit that leave there.
EXIT_LEAVE_PRIOR = 0.5
EXIT_PRIOR_COUNT = 2.0  # pseudo-observations behind that prior
# The factor on an early-exit model's predicted latency, searched over this grid (see `fit`).
EXIT_FACTORS = np.round(np.arange(0.5, 1.201, 0.025), 3)
# Weights that do not fit in the cache are read from memory on every run, weights that fit are
# not: on resnet18 at batch 1 (45 MB of float weights) latency fell with the weight bytes down to
# about 2 MB, then stopped (pruning the widest stage further, 0.8 -> 0.9, measured 0.058x the
# teacher against 0.059x), where a cost linear in the bytes predicted 27% less. So one feature is
# the bytes beyond a cache size, picked from this grid (128 KiB to 64 MiB) by the fit.
CACHE_BYTES = tuple(2 ** power for power in range(17, 27))
INT8_BYTES, FLOAT_BYTES = 1, 4
# What the latency is fitted on: the layout's cost features, then the weight bytes beyond the cache.
FIT_FEATURES = (*LATENCY_FEATURES, "weights_beyond_cache")
# Ridge pull of the trial-time model towards its prior shape, in units of one trial (TrialSeconds).
SECONDS_PRIOR_WEIGHT = 0.1
# That shape, on TrialSeconds.design's columns (a constant, float work, integer work, rounded
# tensors): what a trial costs before any was timed, up to a scale. Fake quantization makes integer
# work about twice as dear to fine-tune as float work (digits, pruned by half: 4.4 s int8, 2.5 s
# float; resnet18: full-width 2-4 bit models 33-44 s, pruned float ones 4-18 s), and the fixed part
# (build, latency, evaluation) is about what the teacher's float work costs.
SECONDS_PRIOR_SHAPE = (1.0, 1.5, 3.0, 0.0)
ACCURACY_FAMILIES = ("prune", "prune_peak", "quant", "separable", "lowrank", "exits")


@dataclass(frozen=True)
class LatencyObservation:
    row: np.ndarray  # encoded candidate
    ratio: float  # measured latency / teacher latency in the same window
    shares: np.ndarray | None = None  # per path (live exits, then the end); None: every sample at the first live exit


class ExitShares:
    """Per exit and threshold: the share of the samples reaching it that leave there."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self._sums: dict[tuple[int, float], list[float]] = {}

    def observe(self, row: np.ndarray, shares: np.ndarray) -> None:
        thresholds = self.layout.exit_thresholds(row[None, :])[0]
        reaching = 1.0
        for position, threshold in enumerate(thresholds):
            if threshold <= 0:
                continue
            if reaching > 1e-6:
                total = self._sums.setdefault((position, float(threshold)), [0.0, 0.0])
                total[0] += shares[position] / reaching
                total[1] += 1.0
            reaching -= shares[position]

    def leave_rate(self, position: int, threshold: float) -> float:
        total = self._sums.get((position, float(threshold)), [0.0, 0.0])
        # Nearby thresholds of the same exit say something too: pool them, weighted down.
        nearby = [(value[0], value[1]) for (p, t), value in self._sums.items() if p == position and t != threshold]
        sum_near = sum(v for v, _ in nearby) * 0.25
        count_near = sum(c for _, c in nearby) * 0.25
        return float((total[0] + sum_near + EXIT_LEAVE_PRIOR * EXIT_PRIOR_COUNT)
                     / (total[1] + count_near + EXIT_PRIOR_COUNT))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """(n, exits + 1): the predicted share of the samples taking each path."""
        thresholds = self.layout.exit_thresholds(rows)
        n, exits = thresholds.shape
        shares = np.zeros((n, exits + 1))
        reaching = np.ones(n)
        for position in range(exits):
            column = thresholds[:, position]
            rates = np.zeros(n)
            for threshold in np.unique(column[column > 0]):
                rates[column == threshold] = self.leave_rate(position, float(threshold))
            shares[:, position] = reaching * rates
            reaching = reaching - shares[:, position]
        shares[:, -1] = reaching
        return shares


class ResidualKernel:
    """A correction learned from the fit's own misses: where a candidate is close (in the
    predictor's feature space) to measured ones, their residuals carry over, weighted by a
    Gaussian kernel; far from every measurement it fades to zero and the parametric model
    stands alone. (A Gaussian process's posterior mean with a constant prior, in its simplest form.)"""

    def __init__(self, *, bandwidth: float = 0.35, prior_weight: float = 0.5):
        self.bandwidth, self.prior_weight = bandwidth, prior_weight
        self._points = np.zeros((0, 0))
        self._residuals = np.zeros(0)
        self._scale = np.ones(0)

    def fit(self, features: np.ndarray, residuals: np.ndarray) -> ResidualKernel:
        self._scale = np.maximum(features.std(axis=0), 1e-9) if len(features) > 1 else np.ones(features.shape[1])
        self._points = features / self._scale
        self._residuals = np.asarray(residuals, dtype=float)
        return self

    def __call__(self, features: np.ndarray) -> np.ndarray:
        if len(self._residuals) == 0:
            return np.zeros(len(features))
        points = features / self._scale
        distances = ((points[:, None, :] - self._points[None, :, :]) ** 2).sum(axis=2) / points.shape[1]
        weights = np.exp(-distances / (2 * self.bandwidth ** 2))
        return (weights @ self._residuals) / (weights.sum(axis=1) + self.prior_weight)


class LatencyPredictor:
    def __init__(self, layout: Layout):
        self.layout = layout
        teacher = layout.teacher["paths"][0, -1]
        # Features in teacher units, so weights are comparable and the prior is simple.
        self._scale = np.where(teacher > 0, teacher, 1.0)
        self._scale[LATENCY_FEATURES.index("segments")] = 1.0
        self._scale[LATENCY_FEATURES.index("graph")] = 1.0
        self._scale[LATENCY_FEATURES.index("ops_int8")] = self._scale[LATENCY_FEATURES.index("ops_float")]
        self._scale[LATENCY_FEATURES.index("macs_int8")] = self._scale[LATENCY_FEATURES.index("macs_float")]
        self._scale[LATENCY_FEATURES.index("int8_inputs")] = self._scale[LATENCY_FEATURES.index("activations")]
        self._scale[LATENCY_FEATURES.index("precision_switches")] = self._scale[LATENCY_FEATURES.index("activations")]
        self._scale[LATENCY_FEATURES.index("switch_count")] = self._scale[LATENCY_FEATURES.index("ops_float")]
        self._scale[LATENCY_FEATURES.index("weights_int8")] = self._scale[LATENCY_FEATURES.index("weights_float")]
        depthwise = LATENCY_FEATURES.index("macs_depthwise")
        self._scale[depthwise] = self._scale[LATENCY_FEATURES.index("macs_float")] / 10
        self._teacher_weight_bytes = max(self._weight_bytes(layout.teacher["paths"][0, -1]), 1.0)
        self.prior = self._prior_weights()
        self.weights = self.prior.copy()
        self.exit_shares = ExitShares(layout)
        self.kernel = ResidualKernel()
        self.exit_factor = 1.0
        self.cache_bytes = CACHE_BYTES[0]  # moot until fitted: the prior puts nothing on the bytes beyond it
        self.observations = 0

    def _prior_weights(self) -> np.ndarray:
        """Mostly work (multiply-accumulates, int8 at about twice float's speed), a little per-op
        and per-activation cost: what a model big enough to be worth compressing spends its time on.
        Precision switches (size and count) start at nothing: priced before any measurement, they
        would make every single layer's step from float to int8 look slower, and the budgeted
        allocation, which walks one layer at a time, would never quantize; the priors' alternating
        probe prices them."""
        prior = np.zeros(len(FIT_FEATURES))
        for name, weight in (("graph", 0.02), ("macs_float", 0.85), ("macs_int8", 0.45), ("macs_depthwise", 0.85),
                             ("ops_float", 0.05), ("ops_int8", 0.08), ("activations", 0.08), ("int8_inputs", 0.05),
                             ("segments", 0.02)):
            prior[FIT_FEATURES.index(name)] = weight
        return prior

    @staticmethod
    def _weight_bytes(paths: np.ndarray) -> np.ndarray:
        return (FLOAT_BYTES * paths[..., LATENCY_FEATURES.index("weights_float")]
                + INT8_BYTES * paths[..., LATENCY_FEATURES.index("weights_int8")])

    def design(self, rows: np.ndarray, shares: np.ndarray | None = None, *, features: dict | None = None,
               cache_bytes: float | None = None) -> np.ndarray:
        """Share-weighted path features (FIT_FEATURES) in teacher units, one row per candidate
        (`features`: the layout's features of `rows`, when the caller has them already)."""
        features = features if features is not None else self.layout.features(rows)
        if shares is None:
            shares = self.exit_shares.predict(rows)
        cache_bytes = self.cache_bytes if cache_bytes is None else cache_bytes
        beyond = np.maximum(0.0, self._weight_bytes(features["paths"]) - cache_bytes) / self._teacher_weight_bytes
        paths = np.concatenate([features["paths"] / self._scale, beyond[:, :, None]], axis=2)
        return np.einsum("np,npf->nf", shares, paths)

    def fit(self, observations: Sequence[LatencyObservation]) -> LatencyPredictor:
        from scipy.optimize import nnls

        self.exit_shares = ExitShares(self.layout)
        for observation in observations:
            if observation.shares is not None:
                self.exit_shares.observe(observation.row, observation.shares)
        if not observations:
            self.weights, self.observations, self.kernel = self.prior.copy(), 0, ResidualKernel()
            self.exit_factor = 1.0
            return self
        rows = np.array([o.row for o in observations])
        features = self.layout.features(rows)
        shares = first_exit_shares(features)
        for index, observation in enumerate(observations):
            if observation.shares is not None:
                shares[index] = observation.shares
        targets = np.array([o.ratio for o in observations])
        exits = features["exit_on"].any(axis=1)
        # Relative errors matter (a 10% miss is as bad at 0.1x as at 1x): weight rows by 1 / target.
        weight = 1.0 / np.maximum(targets, 1e-6)
        prior_rows = np.sqrt(LATENCY_PRIOR_WEIGHT) * np.eye(len(self.prior))
        vector = np.concatenate([targets * weight, np.sqrt(LATENCY_PRIOR_WEIGHT) * self.prior])
        # Early-exit models are timed another way (their segments and runner on real samples, one at
        # a time, against the teacher run the same way) and cost a share of what the same layers
        # cost in one graph: on resnet18 at 32 x 32 the exit after the last stage, float, measured
        # 0.74x the teacher, although it runs every layer. One factor on their predictions, the
        # best of a grid (1 while no exit model was measured), lets the weights fit the rest.
        # The cache size too is the best of its grid (sizes that leave the same bytes beyond
        # them on every measured model fit alike: the first stands for them).
        best, seen = None, []
        for cache_bytes in CACHE_BYTES:
            design = self.design(rows, shares, features=features, cache_bytes=cache_bytes)
            if any(np.array_equal(design[:, -1], beyond) for beyond in seen):
                continue
            seen.append(design[:, -1])
            for factor in (EXIT_FACTORS if exits.any() else [1.0]):
                scaled = design * np.where(exits, factor, 1.0)[:, None]
                matrix = np.vstack([scaled * weight[:, None], prior_rows])
                weights, residual = nnls(matrix, vector, maxiter=50 * len(self.prior))
                if best is None or residual < best[0] - 1e-12:
                    best = (residual, float(factor), weights, scaled, cache_bytes)
        _, self.exit_factor, self.weights, design, self.cache_bytes = best
        self.observations = len(observations)
        fitted = np.maximum(design @ self.weights, 1e-6)
        self.kernel = ResidualKernel().fit(design, np.log(np.maximum(targets, 1e-6) / fitted))
        return self

    def predict(self, rows: np.ndarray, *, lower_bound: bool = False, features: dict | None = None) -> np.ndarray:
        """Predicted latency ratio to the teacher; `lower_bound`: every sample at its first live exit."""
        rows = np.atleast_2d(rows)
        features = features if features is not None else self.layout.features(rows)
        shares = first_exit_shares(features) if lower_bound else None
        design = self.design(rows, shares, features=features)
        design *= np.where(features["exit_on"].any(axis=1), self.exit_factor, 1.0)[:, None]
        return np.maximum(design @ self.weights, 1e-6) * np.exp(self.kernel(design))


class TrialSeconds:
    """The wall seconds of a standard trial (build, latency, fine-tune, evaluation), as a non-negative
    linear function of the work it trains: float and depthwise multiply-accumulates, the integer
    layers' (fake quantization makes them dearer: on digits an int8 model pruned by half
    fine-tuned in 4.4 s, the same model in float in 2.5 s), and the tensors fake quantization
    rounds. Before any trial was timed it predicts SECONDS_PRIOR_SHAPE; fitted to the finished
    trials, its weights are pulled towards that shape scaled to their median by SECONDS_PRIOR_WEIGHT,
    so a few trials only tilt it. (A flat prior let a search without a warm start open with
    full-width 2-bit allocations, 2-3x dearer than a pruned float model on resnet18, because every
    candidate looked equally dear.) Proposers divide what a candidate is expected to add by its
    predicted seconds: a time-bounded search gains most per second spent."""

    def __init__(self, layout: Layout):
        self.layout = layout
        teacher = layout.teacher["paths"][0, -1]
        index = {name: i for i, name in enumerate(LATENCY_FEATURES)}
        self._index = index
        self._macs = max(float(teacher[index["macs_float"]] + teacher[index["macs_depthwise"]]), 1.0)
        self._tensors = max(float(teacher[index["weights_float"]] + teacher[index["activations"]]), 1.0)
        self.weights = np.array(SECONDS_PRIOR_SHAPE)  # unfitted: only the ratios between candidates count
        self._least = 1e-3  # the floor of a prediction (a fifth of the quickest trial, once fitted)

    def design(self, rows: np.ndarray) -> np.ndarray:
        """(n, 4): a constant, float work and integer work in teacher MACs, rounded tensors in the teacher's."""
        whole = self.layout.features(np.atleast_2d(rows))["paths"][:, -1, :]
        index = self._index
        float_work = (whole[:, index["macs_float"]] + whole[:, index["macs_depthwise"]]) / self._macs
        integer_work = whole[:, index["macs_int8"]] / self._macs
        rounded = (whole[:, index["weights_int8"]] + whole[:, index["int8_inputs"]]) / self._tensors
        return np.column_stack([np.ones(len(whole)), float_work, integer_work, rounded])

    def fit(self, rows: np.ndarray, seconds: np.ndarray) -> TrialSeconds:
        from scipy.optimize import nnls

        seconds = np.asarray(seconds, dtype=float)
        shape = np.array(SECONDS_PRIOR_SHAPE)
        if len(seconds) == 0:
            self.weights, self._least = shape, 1e-3
            return self
        design = self.design(rows)
        prior = shape * float(np.median(seconds)) / max(float(np.median(design @ shape)), 1e-9)
        penalty = np.sqrt(SECONDS_PRIOR_WEIGHT) * np.eye(len(prior))
        self.weights, _ = nnls(np.vstack([design, penalty]), np.concatenate([seconds, penalty @ prior]))
        self._least = 0.2 * float(np.min(seconds))
        return self

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted seconds per row."""
        return np.maximum(self.design(rows) @ self.weights, self._least)


def first_exit_shares(features: dict) -> np.ndarray:
    """Path shares with every sample leaving at its candidate's first live exit (or at the end)."""
    on = features["exit_on"]
    shares = np.zeros((len(on), on.shape[1] + 1))
    if on.shape[1] == 0:  # a space without exits: every sample runs the whole network
        shares[:, 0] = 1.0
        return shares
    first = np.where(on.any(axis=1), on.argmax(axis=1), on.shape[1])
    shares[np.arange(len(on)), first] = 1.0
    return shares


class Damage:
    """Per candidate and family, how much it takes away, from the layer sensitivity pass.

    - prune: the mean over groups of -log(share of channels kept), each group weighted by its
      probed sensitivity (its untuned drop relative to the groups' average, within 0.25 ... 4);
      prune_peak: the largest of these per group (one group cut to the bone ruins a model
      whatever the average), a group's weight counted only below 1: raised to the fourth power,
      a sensitive group's weight of 3-4 multiplied its cut's term 80-250 times, and uniform
      pruning by 0.7, which loses under a point on resnet18 and mnist1d after fine-tuning, was
      predicted before any trial at -97% and 25% (the term's prior is calibrated on uniform cuts).
      Untuned drops themselves overstate what fine-tuning leaves (on digits, uniform 0.5 sums to
      a 156% "drop" and fine-tunes to -0.6%), but they rank the groups; the kept capacity says
      how far the model was cut;
    - quant, separable, lowrank: the summed untuned drops of the layers' choices (probed widths as
      measured, interpolated elsewhere);
    - exits: the live exits' (1 - threshold), summed.
    """

    def __init__(self, layout: Layout, sensitivity: dict[str, Any]):
        self.layout = layout
        encoding = layout.encoding
        teacher = float(sensitivity.get("teacher_accuracy", 1.0))
        probes = sensitivity.get("probes", {})
        self._tables: dict[str, list[tuple[int, np.ndarray]]] = {}  # family -> (column, drop per option)
        prune_drops = {}
        for column, knob in enumerate(encoding.knobs):
            measured = {key: max(0.0, teacher - acc) for key, acc in probes.get(knob.family, {}).get(knob.target, {}).items()}
            if knob.family == "prune" and knob.stage is not None:
                prune_drops[column] = sum(measured.values()) if measured else None
            elif knob.family == "quant":
                self._tables.setdefault("quant", []).append((column, _quant_drops(knob.domain.options, measured)))
            elif knob.family == "separable" and knob.stage is not None:
                drop = measured.get("true", 0.0)
                self._tables.setdefault("separable", []).append(
                    (column, np.array([drop if option is True else 0.0 for option in knob.domain.options])))
            elif knob.family == "lowrank":
                options = knob.domain.options
                smallest = min(options)
                drop = next(iter(measured.values()), 0.0)
                self._tables.setdefault("lowrank", []).append(
                    (column, np.array([drop * (1 - o) / (1 - smallest) if smallest < 1 else 0.0 for o in options])))
        known = [d for d in prune_drops.values() if d is not None]
        mean = float(np.mean(known)) if known and np.mean(known) > 0 else 1.0
        self._prune_weights = {column: float(np.clip((drop if drop is not None else mean) / mean, 0.25, 4.0))
                               for column, drop in prune_drops.items()}

    def features(self, rows: np.ndarray) -> np.ndarray:
        """(n, len(ACCURACY_FAMILIES)): the damage of each family (see the class doc)."""
        rows = np.atleast_2d(rows)
        result = np.zeros((len(rows), len(ACCURACY_FAMILIES)))
        if self._prune_weights:
            keep = self.layout.keep(rows)
            total = sum(self._prune_weights.values())
            for column, weight in self._prune_weights.items():
                cut = -np.log(keep[column])
                result[:, 0] += weight * cut / total
                result[:, 1] = np.maximum(result[:, 1], min(weight, 1.0) * cut)
        for family, tables in self._tables.items():
            index = ACCURACY_FAMILIES.index(family)
            for column, drops in tables:
                result[:, index] += drops[rows[:, column].astype(int)]
        thresholds = self.layout.exit_thresholds(rows)
        result[:, ACCURACY_FAMILIES.index("exits")] = np.where(thresholds > 0, 1.0 - thresholds, 0.0).sum(axis=1)
        return result


# Quantising many layers at once costs more than their one-at-a-time probes add up to (on
# digits, every layer at 2 bits probes at under 1% each and fine-tunes to 56%): every layer at
# b <= 8 bits adds QUANT_FLOOR x 4^-(b - 2), the quantisation noise power, on top of its probe.
QUANT_FLOOR = 0.005


def _quant_drops(options: Sequence[str], measured: dict[str, float]) -> np.ndarray:
    """Drop per option: probed widths as measured, 8 bits a sixteenth of 4 bits' (quantisation noise
    power falls 4x per bit), float widths none; k-means codebooks at 0.7x the uniform grid's; plus
    the QUANT_FLOOR term of the width."""
    by_bits = {}
    for key, drop in measured.items():
        bits, _ = decode_choice(json.loads(key))
        by_bits[bits] = drop
    four = by_bits.get(4, by_bits.get(2, 0.0) / 16)
    two = by_bits.get(2, four * 16)
    estimate = {32: 0.0, 16: 0.0, 8: four / 16, 4: four, 2: two}
    drops = []
    for option in options:
        bits, mode = decode_choice(option)
        floor = QUANT_FLOOR * 4.0 ** -(bits - 2) if bits <= 8 else 0.0
        drops.append((estimate.get(bits, 0.0) + floor) * (0.7 if mode == "kmeans" else 1.0))
    return np.array(drops)


# Fine-tuned loss as a function of each family's damage, before trials calibrate it: the terms
# (family, power) and their prior coefficients. Pruning costs little until much of the capacity
# is gone, then a lot (on digits: uniform 0.5 loses 0.6 points, 0.7 loses 7, 0.8 loses 23;
# capacity damage 0.69, 1.2, 1.6: close to 0.03 x D^4); separable convs alike (untuned drops
# summing to 0.56 fine-tuned to -0.3 points, all seven convs at 1.47 to -16: 0.035 x D^4); the
# other families' untuned drops are mostly recovered when small and not when large.
ACCURACY_TERMS = (("prune", 4, 0.03), ("prune_peak", 4, 0.002), ("quant", 1, 0.05), ("separable", 4, 0.035),
                  ("lowrank", 2, 0.07), ("exits", 1, 0.01))
# A model that lost more than this share of the teacher's accuracy has failed (the hypervolume
# counts losses up to 10%): the terms are fitted on the models that did not, and a failure
# counts only near itself, through the kernel (how far it fell says little about the terms, and
# nothing about models unlike it). Fitted on, failures set the terms far from every model that
# fine-tuned: one sampled failure at 47% on mnist1d (exits, separable convs, 2-bit k-means and
# pruning at once) put the pruning coefficient at 6x its prior and low-rank's at 400x; on digits
# two screened-out models with two separable convs, among six that fine-tuned to 93-98% with the
# same, put pruning's at 40x even with their losses counted only up to this share, and uniform
# pruning by 0.4, which the hand grid measures at 99%, was predicted at 73%. The trust region
# keeps proposals clear of failures too (trust.py).
FAILED_LOSS = 0.2
# The prior counts as this many observations per coefficient: a fit on a few dozen noisy
# fine-tunes ranked held-out candidates better held close to the prior than left free
# (leave-one-out rank correlation on 24 digits candidates: 0.80 against 0.71). Each observation
# sits at the data's largest value of its term, and at least at a damage of 1 (pruning to 37% of
# every group; quantisation whose single-layer probes lose 1 between them): the trials of a
# search's first minutes prune by 0.3 or less (damage 0.3, fourth power 0.008), where a term
# that small could grow 50-400x at no cost in the fit, and the proposers take the model to the
# heavier cuts the trust region opens next.
ACCURACY_PRIOR_STRENGTH = 3.0


@dataclass
class AccuracyPredictor:
    """Fine-tuned accuracy = teacher accuracy - loss(damage): a non-negative combination of
    ACCURACY_TERMS, pulled towards their priors, fitted on the fine-tuned trials that did not fail (FAILED_LOSS)."""

    damage: Damage
    teacher_accuracy: float
    coefficients: np.ndarray = field(init=False)
    observations: int = field(default=0, init=False)
    residual: float = field(default=0.02, init=False)  # typical error, in accuracy units
    # The fit's own misses carried over to nearby candidates: an additive model cannot learn that
    # one combination fails (on digits a candidate that fine-tuned to 69% was predicted at 96%,
    # and its near twin was proposed next at 96% again).
    kernel: ResidualKernel = field(default_factory=ResidualKernel, init=False)

    def __post_init__(self) -> None:
        self.coefficients = self._prior()

    @staticmethod
    def _prior() -> np.ndarray:
        return np.array([coefficient for _, _, coefficient in ACCURACY_TERMS])

    def _design(self, damage: np.ndarray) -> np.ndarray:
        return np.column_stack([damage[:, ACCURACY_FAMILIES.index(family)] ** power
                                for family, power, _ in ACCURACY_TERMS])

    def fit(self, rows: np.ndarray, accuracies: np.ndarray) -> AccuracyPredictor:
        from scipy.optimize import nnls

        rows, accuracies = np.atleast_2d(rows), np.asarray(accuracies, dtype=float)
        self.observations = len(accuracies)
        self.coefficients, self.residual, self.kernel = self._prior(), 0.02, ResidualKernel()
        if len(accuracies) == 0:
            return self
        damage = self.damage.features(rows)
        design = self._design(damage)
        losses = np.maximum(self.teacher_accuracy - accuracies, 0.0)
        working = losses < FAILED_LOSS * self.teacher_accuracy
        if working.any():
            prior = self._prior()
            # Pseudo-observations of the prior, each scaled to its term's size on the data, or at damage 1.
            strength = ACCURACY_PRIOR_STRENGTH * np.maximum(np.abs(design[working]).max(axis=0), 1.0)
            matrix = np.vstack([design[working], np.diag(strength)])
            vector = np.concatenate([losses[working], strength * prior])
            self.coefficients, _ = nnls(matrix, vector, maxiter=50 * len(prior))
        misses = losses - design @ self.coefficients
        if working.any():
            self.residual = float(max(0.002, np.sqrt(np.mean(misses[working] ** 2))))
        self.kernel = ResidualKernel().fit(damage, misses)
        return self

    def predict(self, rows: np.ndarray) -> np.ndarray:
        damage = self.damage.features(np.atleast_2d(rows))
        loss = self._design(damage) @ self.coefficients + self.kernel(damage)
        return self.teacher_accuracy - np.maximum(loss, 0.0)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation (average ranks for ties); nan for fewer than three pairs or a constant side."""
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
