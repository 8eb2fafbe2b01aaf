"""Budgeted allocation (HAQ / AutoQuantize style): bits and ratios spread across layers by sensitivity.

For a latency target, start from the teacher and take, one at a time, the single-layer step
(a prune group one `round_to` step of channels narrower, a layer down from float to int8, a
conv made separable, a low-rank layer one rank smaller) with the most predicted latency saved per predicted accuracy
lost, until the predicted latency meets the target. Then spend the size budget the same way:
lower bit widths (8, then down to the variant's floor) layer by layer, most bytes saved per accuracy
lost first, while no step costs more than `SIZE_STEP_TOLERANCE` of predicted accuracy and none
makes the model slower. Greedy on an additive cost model is the classic answer to this
knapsack; the predictors (search/predictors.py) supply both sides of every ratio.

Targets run from the budget down: the proposer works through TARGETS (fractions of the latency
budget) for each floor in turn, one candidate per call, skipping any already in the study and
any target an allocation trial already aimed at.
"""

from __future__ import annotations

import numpy as np

from slimsearch.search.origins import ALLOCATION
from slimsearch.search.proposals.base import History, Proposal, Proposer
from slimsearch.search.proposals.knowledge import Knowledge
from slimsearch.search.proposals.trust import TRUST_LATENCY_STEP, Limits
from slimsearch.spaces.quant import INTEGER_BITS, decode_choice

# Latency targets as fractions of the budget, in the order they are proposed: the budget and
# its middle first, so a short search covers the range early.
TARGETS = (1.0, 0.5, 0.7, 0.35, 0.25, 0.85, 0.6, 0.42, 0.3, 0.18)
# Latency targets as fractions of the fastest accurate model measured so far, proposed first.
BEYOND_FRONT = (0.85, 0.7)
FLOORS = (4, 2)  # the lowest width the size phase may give a layer: a cautious and a bold variant
PRUNE_STEP = 0.05  # the ratio grid when a knob has none of its own
SIZE_STEP_TOLERANCE = 0.002  # predicted accuracy one bit-width step may cost in the size phase
MAX_STEPS = 400
TARGET_TOLERANCE = 0.03  # targets this close (relative) count as one


class AllocationProposer(Proposer):
    origin = ALLOCATION

    def __init__(self, knowledge: Knowledge):
        self.knowledge = knowledge

    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        tried = history.tried
        floors = [f for f in FLOORS if f in self._widths()] or [None]
        # Targets just past the fastest accurate model first (where the front can grow), then the
        # budget's; only inside the trust region, with no size step past it (search/proposals/knowledge.py).
        knowledge = self.knowledge
        latency_floor, size_floor = knowledge.trust_floors(history)
        fastest = latency_floor / TRUST_LATENCY_STEP  # the fastest accurate model, or the budget
        budget = knowledge.budget_ratio
        targets = [fastest * fraction for fraction in BEYOND_FRONT if fastest < budget]
        targets = [t for t in dict.fromkeys(targets + [budget * fraction for fraction in TARGETS]) if t >= latency_floor]
        limits = knowledge.knob_limits(history)
        reached = self._speed_path(targets, limits)
        for target in targets:
            if target not in reached:
                continue
            for floor in floors:
                if _aimed_at(target, floor, history):
                    continue
                row = self._shrink(reached[target], floor, size_floor, limits)
                predicted = knowledge.predict(row[None, :])
                if not knowledge.trusted(row[None, :], predicted, history)[0]:
                    continue
                candidate = knowledge.encoding.decode(row[None, :])[0]
                if candidate.key not in tried:
                    return Proposal(candidate, ALLOCATION, predicted=predicted.record(
                        0, target_ratio=float(target), floor=float(floor or 0)))
        return None

    def allocate(self, target_ratio: float, floor: int | None) -> np.ndarray | None:
        """The allocation for one latency target and bit-width floor (None if the target is out of reach)."""
        row = self._speed_path([target_ratio]).get(target_ratio)
        return None if row is None else self._shrink(row, floor)  # outside any search: no trust region

    def _speed_path(self, targets: list[float], limits: Limits | None = None) -> dict[float, np.ndarray]:
        """One greedy walk from the teacher, the row where it first meets each target (targets it
        cannot reach are left out): every target's allocation from a single pass."""
        knowledge = self.knowledge
        row = knowledge.encoding.default.copy()
        pending = sorted(set(targets), reverse=True)
        reached: dict[float, np.ndarray] = {}
        for _ in range(MAX_STEPS):
            current = knowledge.predict(row[None, :])
            while pending and current.latency_ratio[0] <= pending[0]:
                reached[pending.pop(0)] = row.copy()
            if not pending:
                break
            moves = self._within(self._moves(row, speed=True, floor=None), limits)
            if len(moves) == 0:
                break
            predicted = knowledge.predict(moves)
            saved = current.latency_ratio[0] - predicted.latency_ratio
            lost = np.maximum(current.accuracy[0] - predicted.accuracy, 0.0) + 1e-5
            useful = saved > 1e-4
            if not useful.any():
                break
            row = moves[int(np.argmax(np.where(useful, saved / lost, -np.inf)))]
        return reached

    def _shrink(self, row: np.ndarray, floor: int | None, size_floor: float = 0.0,
                limits: Limits | None = None) -> np.ndarray:
        """Lower bit widths down to `floor` while each step is cheap in accuracy and the size stays
        at or above `size_floor` (a ratio to the teacher's bytes)."""
        knowledge = self.knowledge
        if floor is None:
            return row
        for _ in range(MAX_STEPS):
            current = knowledge.predict(row[None, :])
            moves = self._within(self._moves(row, speed=False, floor=floor), limits)
            if len(moves) == 0:
                break
            predicted = knowledge.predict(moves)
            saved = np.log(current.size_bytes[0]) - np.log(predicted.size_bytes)
            lost = current.accuracy[0] - predicted.accuracy
            allowed = ((saved > 0) & (lost <= SIZE_STEP_TOLERANCE) & (predicted.latency_ratio <= current.latency_ratio[0] * 1.01)
                       & (predicted.size_bytes / knowledge.teacher_size >= size_floor))
            if not allowed.any():
                break
            score = np.where(allowed, saved / (np.maximum(lost, 0.0) + 1e-5), -np.inf)
            row = moves[int(np.argmax(score))]
        return row

    def _within(self, moves: np.ndarray, limits: Limits | None) -> np.ndarray:
        """The moves inside the trust region's knob limits (all of them without limits)."""
        if limits is None or len(moves) == 0:
            return moves
        return moves[self.knowledge.levels.within(moves, limits)]

    def _moves(self, row: np.ndarray, *, speed: bool, floor: int | None) -> np.ndarray:
        """Every single-knob step from `row`: for speed, pruning, int8, separable and low rank; for
        size, bit widths below 8 down to `floor`."""
        encoding = self.knowledge.encoding
        knobs = encoding.knobs
        moves = []
        if speed:
            keep = self.knowledge.layout.keep(row[None, :])
            for column in encoding.columns("prune"):
                ratio = self._next_ratio(column, row[column], float(keep[column][0]))
                if ratio is not None:
                    moves.append(_with(row, column, ratio))
            for column in encoding.columns("separable"):
                options = knobs[column].domain.options
                if True in options and row[column] != options.index(True):
                    moves.append(_with(row, column, options.index(True)))
            for column in encoding.columns("lowrank"):
                options = knobs[column].domain.options
                smaller = [i for i, o in enumerate(options) if o < options[int(row[column])]]
                if smaller:
                    moves.append(_with(row, column, max(smaller, key=lambda i: options[i])))
        for column in encoding.columns("quant"):
            options = knobs[column].domain.options
            bits, _ = decode_choice(options[int(row[column])])
            if speed and bits > INTEGER_BITS and "8-uniform" in options:
                moves.append(_with(row, column, options.index("8-uniform")))
            if not speed and floor is not None:
                lower = [b for b in (INTEGER_BITS, 4, 2) if floor <= b < bits and f"{b}-uniform" in options]
                if lower:
                    moves.append(_with(row, column, options.index(f"{max(lower)}-uniform")))
        return np.array(moves).reshape(len(moves), encoding.width)

    def _next_ratio(self, column: int, ratio: float, keep: float) -> float | None:
        """The smallest ratio on the knob's grid that removes at least one more `round_to` step of
        channels (a smaller step would round back to the same width), or None at the limit."""
        layout = self.knowledge.layout
        domain = layout.encoding.knobs[column].domain
        channels = layout.prune_channels(column)
        fewer = round(keep * channels) - layout.round_to
        if fewer < layout.round_to:
            return None
        step = domain.step or PRUNE_STEP
        for candidate in np.arange(ratio + step, domain.high + 1e-9, step):
            candidate = round(float(candidate), 6)
            if float(layout.keep_at(column, candidate)) * channels <= fewer + 1e-9:
                return candidate
        return None

    def _widths(self) -> set[int]:
        knobs = self.knowledge.encoding.knobs
        return {decode_choice(o)[0] for c in self.knowledge.encoding.columns("quant") for o in knobs[c].domain.options}


def _aimed_at(target: float, floor: int | None, history: History) -> bool:
    """Whether an allocation trial already aimed at (about) this latency target with this floor.
    The predictors move after every trial, so the same target gives a slightly different
    allocation each time: on digits, three of thirteen trials went to the budget's own target,
    11 s each."""
    return any(r.origin == ALLOCATION and r.predicted
               and abs(float(r.predicted.get("target_ratio", -1.0)) / target - 1.0) < TARGET_TOLERANCE
               and float(r.predicted.get("floor", 0.0)) == float(floor or 0)
               for r in history.records)


def _with(row: np.ndarray, column: int, value: float) -> np.ndarray:
    changed = row.copy()
    changed[column] = value
    return changed
