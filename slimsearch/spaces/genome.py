"""A parametrisation the sampler explores well: per-family intensity, per-layer allocation by sensitivity.

The joint space has one knob per layer and family (30 to 130 on the built-in models). A
sampler drawing each independently mostly lands on candidates that compress every layer hard
at once, and one layer at 2 bits or one group at 0.9 ruins a model. So the sampler searches a
dozen genes instead, and each decodes to a full per-layer candidate, NetAdapt / AMC style:

- prune.level, prune.shape: the average ratio, and how far it is spread by sensitivity (0:
  uniform; 1: from 0 on the most sensitive group to twice the average on the most robust);
- quant.base, quant.low, quant.share: every layer at the base width, and the most robust
  `share` of the layers (by their probe at the low width) down at the low width;
- quant.mode: uniform grid or k-means codebook for the layers at 8 bits or fewer;
- separable.share: the most robust share of the eligible convs substituted;
- lowrank.share, lowrank.rank: the most robust share of the eligible layers factorised at one rank ratio;
- exits.first, exits.threshold, exits.criterion: the earliest live exit (or none), every later
  exit on too, all at one threshold;
- distill.temperature, distill.alpha, precision.dtype (GPU targets), as they are: every
  run-wide knob outside the families above is its own gene.

Sensitivity is the layer sensitivity pass (search/sensitivity.py): a layer is robust when its
untuned accuracy with that one change is high. Decoding is vectorised over many genomes, for
the predictor-guided inner search. Full per-layer freedom stays reachable through the other
proposers (search/proposals/), whose per-layer mutations leave this parametrisation behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slimsearch.spaces.encoding import Encoding
from slimsearch.spaces.exits import CRITERION, OFF
from slimsearch.spaces.knobs import Choice, Domain, FloatRange
from slimsearch.spaces.quant import INTEGER_BITS, decode_choice, encode_choice

UNIFORM, KMEANS = "uniform", "kmeans"
# Families whose per-layer knobs the genes above shape; their run-wide knobs (the exit criterion) too.
SHAPED_FAMILIES = ("prune", "quant", "separable", "lowrank", "exits")


@dataclass(frozen=True)
class Gene:
    name: str
    domain: Domain


class Genome:
    def __init__(self, encoding: Encoding, sensitivity: dict[str, Any] | None):
        self.encoding = encoding
        knobs = encoding.knobs
        probes = (sensitivity or {}).get("probes", {})
        self._prune = encoding.columns("prune")
        self._quant = [c for c in encoding.columns("quant")]
        self._separable = encoding.columns("separable")
        self._lowrank = encoding.columns("lowrank")
        self._exits = [c for c in encoding.columns("exits")]
        self._criterion = encoding.column("exits", CRITERION)
        # Run-wide knobs (distillation, execution precision, ...) are genes as they are.
        self._run_wide = {f"{knob.family}.{knob.target}": c for c, knob in enumerate(knobs)
                          if knob.stage is None and knob.family not in SHAPED_FAMILIES}
        self.genes = self._genes()
        # Robustness ranks in [0, 1] (1: the most robust), per family, from the probes.
        self._prune_rank = _robustness(knobs, self._prune, probes.get("prune", {}))
        self._separable_rank = _robustness(knobs, self._separable, probes.get("separable", {}))
        self._lowrank_rank = _robustness(knobs, self._lowrank, probes.get("lowrank", {}))
        self._quant_rank = {bits: _robustness(knobs, self._quant, probes.get("quant", {}), bits=bits)
                            for bits in self._low_widths()}
        # A width without probes of its own (8 bits) ranks layers by the closest probed width.
        probed = [bits for bits, ranks in self._quant_rank.items() if len(set(ranks.values())) > 1]
        for bits, ranks in self._quant_rank.items():
            if bits not in probed and probed:
                self._quant_rank[bits] = self._quant_rank[min(probed, key=lambda b: abs(b - bits))]
        # Per quant column: the option index for (width position in _widths(), k-means or not).
        self._quant_options = {column: np.array([[_option_index(knobs[column].domain.options, bits, mode)
                                                  for mode in (UNIFORM, KMEANS)] for bits in self._widths()])
                               for column in self._quant}

    # --- the genes ---------------------------------------------------------------------------
    def _genes(self) -> list[Gene]:
        knobs, genes = self.encoding.knobs, []
        if self._prune:
            high = max(knobs[c].domain.high for c in self._prune)
            step = knobs[self._prune[0]].domain.step
            genes += [Gene("prune.level", FloatRange(0.0, high, step)), Gene("prune.shape", FloatRange(0.0, 1.0))]
        if self._quant:
            widths = self._widths()
            bases = tuple(b for b in widths if b >= INTEGER_BITS) or (max(widths),)
            genes += [Gene("quant.base", Choice(bases)), Gene("quant.low", Choice(self._low_widths() or (bases[-1],))),
                      Gene("quant.share", FloatRange(0.0, 1.0))]
            modes = self._modes()
            if len(modes) > 1:
                genes.append(Gene("quant.mode", Choice(modes)))
        if self._separable:
            genes.append(Gene("separable.share", FloatRange(0.0, 1.0)))
        if self._lowrank:
            ranks = sorted({o for c in self._lowrank for o in knobs[c].domain.options if o < 1}, reverse=True)
            if ranks:
                genes += [Gene("lowrank.share", FloatRange(0.0, 1.0)), Gene("lowrank.rank", Choice(tuple(ranks)))]
        stages = [knobs[c] for c in self._exits]
        if stages:
            thresholds = sorted({o for knob in stages for o in knob.domain.options if o != OFF})
            genes += [Gene("exits.first", Choice((OFF, *[knob.target for knob in stages]))),
                      Gene("exits.threshold", Choice(tuple(thresholds)))]
            if self._criterion is not None and len(knobs[self._criterion].domain.options) > 1:
                genes.append(Gene("exits.criterion", knobs[self._criterion].domain))
        for name, column in self._run_wide.items():
            genes.append(Gene(name, knobs[column].domain))
        return genes

    def _widths(self) -> list[int]:
        """Every bit width some quant knob offers, widest first."""
        if not hasattr(self, "_width_list"):
            knobs = self.encoding.knobs
            self._width_list = sorted({decode_choice(o)[0] for c in self._quant for o in knobs[c].domain.options},
                                      reverse=True)
        return self._width_list

    def _low_widths(self) -> tuple[int, ...]:
        return tuple(b for b in self._widths() if b <= INTEGER_BITS)

    def _modes(self) -> tuple[str, ...]:
        knobs = self.encoding.knobs
        modes = {decode_choice(o)[1] for c in self._quant for o in knobs[c].domain.options}
        return tuple(m for m in (UNIFORM, KMEANS) if m in modes)

    # --- decoding -----------------------------------------------------------------------------
    def decode(self, genes: dict[str, Any]) -> np.ndarray:
        """The encoded candidate (one row) for one genome given as {gene name: value}."""
        columns = {}
        for gene in self.genes:
            if gene.name in genes:
                value = genes[gene.name]
                columns[gene.name] = np.array([gene.domain.options.index(value) if isinstance(gene.domain, Choice)
                                               else float(value)])
        return self.decode_columns(columns, 1)[0]

    def random_columns(self, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`count` genomes drawn uniformly, gene by gene, in the columnar form `decode_columns` takes."""
        columns = {}
        for gene in self.genes:
            if isinstance(gene.domain, FloatRange):
                columns[gene.name] = rng.uniform(gene.domain.low, gene.domain.high, size=count)
            else:
                columns[gene.name] = rng.integers(len(gene.domain.options), size=count)
        return columns

    def random_rows(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` random genomes as encoded candidate rows."""
        return self.decode_columns(self.random_columns(count, rng), count)

    def decode_columns(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Encoded candidates for `n` genomes given gene by gene: an array of values per range gene,
        of option indices per choice gene; a missing gene takes its no-compression value."""
        knobs = self.encoding.knobs
        rows = np.repeat(self.encoding.default[None, :], n, axis=0)
        options = {gene.name: gene.domain.options for gene in self.genes if isinstance(gene.domain, Choice)}

        def value(name: str, default) -> np.ndarray:
            if name not in columns:
                return np.full(n, default, dtype=object if not isinstance(default, (int, float)) else float)
            if name in options:
                return np.array(options[name], dtype=object)[np.asarray(columns[name], dtype=int)]
            return np.asarray(columns[name], dtype=float)

        if self._prune:
            level, shape = value("prune.level", 0.0), value("prune.shape", 0.0)
            for column in self._prune:
                # Rank 1 (most robust) takes up to (1 + shape) x the level, rank 0 down to (1 - shape) x.
                rows[:, column] = level * (1.0 + shape * (2.0 * self._prune_rank[column] - 1.0))
        if self._quant:
            widths = self._widths()
            base = value("quant.base", widths[0]).astype(int)
            low = value("quant.low", widths[0]).astype(int)
            share = value("quant.share", 0.0)
            kmeans = value("quant.mode", UNIFORM) == KMEANS
            position = np.zeros(max(widths) + 1, dtype=int)
            position[widths] = np.arange(len(widths))
            for column in self._quant:
                ranks = np.full(n, 0.5)
                for bits in np.unique(low):
                    ranks[low == bits] = self._quant_rank.get(int(bits), {}).get(column, 0.5)
                bits = np.where(_taken(ranks, share, len(self._quant)), low, base)
                rows[:, column] = self._quant_options[column][position[bits], kmeans.astype(int)]
        if self._separable:
            share = value("separable.share", 0.0)
            for column in self._separable:
                choices = knobs[column].domain.options
                rows[:, column] = np.where(_taken(self._separable_rank[column], share, len(self._separable)),
                                           choices.index(True), choices.index(False))
        if self._lowrank and "lowrank.rank" in options:
            share, rank = value("lowrank.share", 0.0), value("lowrank.rank", 1.0).astype(float)
            for column in self._lowrank:
                choices = knobs[column].domain.options
                whole = choices.index(1.0) if 1.0 in choices else choices.index(knobs[column].default)
                index = np.array([choices.index(r) if r in choices else whole for r in rank])
                rows[:, column] = np.where(_taken(self._lowrank_rank[column], share, len(self._lowrank)), index, whole)
        if self._exits and "exits.first" in options:
            first = np.asarray(columns.get("exits.first", np.zeros(n)), dtype=int)  # 0: off, i: from the i-th exit on
            threshold = value("exits.threshold", None)
            for position, column in enumerate(self._exits):
                choices = knobs[column].domain.options
                live = (first > 0) & (position + 1 >= first)
                index = np.array([choices.index(t) if t in choices else choices.index(OFF) for t in threshold])
                rows[:, column] = np.where(live, index, choices.index(OFF))
            if self._criterion is not None and "exits.criterion" in options:
                rows[:, self._criterion] = np.asarray(columns.get("exits.criterion", np.zeros(n)), dtype=int)
        for name, column in self._run_wide.items():
            if name in columns:  # a choice gene is its knob's domain: its option index is the code
                rows[:, column] = (np.asarray(columns[name], dtype=int) if name in options
                                   else value(name, knobs[column].default))
        return self.encoding.snap(rows)

def _taken(rank, share, count: int):
    """Whether a layer of robustness `rank` (1: most robust, 0: least, among `count` layers) is
    among the most robust `share` of them: its place from the most robust one is below share x count."""
    place = (1.0 - np.asarray(rank)) * max(count - 1, 0)
    return place < np.asarray(share) * count - 1e-9


def _option_index(options: tuple, bits: int, mode: str) -> int:
    wanted = encode_choice(bits, mode)
    if wanted in options:
        return options.index(wanted)
    fallback = encode_choice(bits, UNIFORM if mode == KMEANS else KMEANS)
    if fallback in options:
        return options.index(fallback)
    # This layer does not offer the width: its nearest wider option.
    widths = sorted(((decode_choice(o)[0], i) for i, o in enumerate(options)), key=lambda pair: (pair[0] < bits, abs(pair[0] - bits)))
    return widths[0][1]


def _robustness(knobs, columns: list[int], probes: dict[str, dict[str, float]], *, bits: int | None = None) -> dict[int, float]:
    """Per column, its rank among `columns` in [0, 1] by probed accuracy (1: the highest; ties share
    their mean rank; layers without a probe in the middle)."""
    import json

    if not columns:
        return {}
    scores = {}
    for column in columns:
        measured = probes.get(knobs[column].target, {})
        if bits is not None:
            measured = {k: v for k, v in measured.items() if decode_choice(json.loads(k))[0] == bits}
        if measured:
            # The probe at the largest change is the most telling one.
            scores[column] = measured[max(measured, key=_probe_order)]
    if len(scores) < 2:
        return {column: 0.5 for column in columns}
    values = np.array(list(scores.values()))
    ranks = {}
    for column, score in scores.items():
        below = np.sum(values < score) + 0.5 * (np.sum(values == score) - 1)
        ranks[column] = float(below / (len(values) - 1))
    return {column: ranks.get(column, 0.5) for column in columns}


def _probe_order(key: str) -> float:
    import json

    value = json.loads(key)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if value <= 1 else -float(value)
    bits, _ = decode_choice(value)
    return -float(bits)
