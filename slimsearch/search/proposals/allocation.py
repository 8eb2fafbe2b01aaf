"""Budgeted allocation (HAQ / AutoQuantize style): bits and ratios spread across layers by sensitivity.

For a latency target, start from the teacher (or from an accurate model the search has measured)
and take, one at a time, the single-layer step (a prune group one `round_to` step of channels
narrower, a layer down from float to int8, a conv made separable, a low-rank layer one rank
smaller) with the most predicted latency saved per predicted accuracy lost, until the predicted
latency meets the target. One step is not a single layer's: every float layer to int8 at once,
since each layer alone adds a quantize and a dequantize around it, and on a small network such
as mnist1d's that costs more than its int8 kernel saves, so a walk one layer at a time never
reached the int8 models the hand grid's best points are. Then spend the size budget the same way:
lower bit widths (8, then down to the variant's floor) layer by layer, most bytes saved per accuracy
lost first, while no step costs more than `SIZE_STEP_TOLERANCE` of predicted accuracy and none
makes the model slower. Greedy on an additive cost model is the classic answer to this
knapsack; the predictors (search/predictors.py) supply both sides of every ratio.

Each call walks from the teacher to TARGETS (fractions of the latency budget) and from each of the
front's fastest accurate models to BEYOND_FRONT (fractions of its own latency), with every floor,
and once more keeping the start's precision (pruning and float substitutions only, and a size
phase that takes float layers to float16 weights alone: the cheapest models to fine-tune, which
fake integer quantization is not, at half the bytes), and proposes the
allocation predicted to add the most hypervolume to the front per second of its
trial (Knowledge.best_per_second), inside the trust region (search/proposals/trust.py); none already
in the study, no aim (start, target, floor) an allocation trial already took, and nothing when
no allocation is worth a trial (Knowledge.worth_a_trial). So the targets move with the front.
"""

from __future__ import annotations

import numpy as np

from slimsearch.search.origins import ALLOCATION
from slimsearch.search.pareto import pareto_indices
from slimsearch.search.proposals.base import History, Proposal, Proposer
from slimsearch.search.proposals.knowledge import Knowledge
from slimsearch.search.proposals.trust import Limits, TrustRegion
from slimsearch.spaces.quant import INTEGER_BITS, decode_choice

# Latency targets as fractions of the budget, walked to from the teacher.
TARGETS = (1.0, 0.5, 0.7, 0.35, 0.25, 0.85, 0.6, 0.42, 0.3, 0.18)
# Latency targets as fractions of an accurate front model's latency, walked to from that model
# (1.0: as fast, and smaller by the size phase alone).
BEYOND_FRONT = (1.0, 0.85, 0.7)
FRONT_STARTS = 4  # the front's fastest accurate models walked on from
FROM_TEACHER = -1  # the start of a walk from the teacher, as trials record it
FLOORS = (4, 2)  # the lowest width the size phase may give a layer: a cautious and a bold variant
# The variant that keeps float precision, as its aims record it. Without a warm start every walk
# used to end in the size phase: resnet18's first allocations were full-width models at 2-4 bits,
# accurate but 4.4-5.5x faster where the grid's pruned float ones reached 10x and more, and 33-44 s
# a trial to fine-tune against 4-18 s. Its size phase goes no lower than float16 weights, which
# deploy at float's speed (ONNX Runtime casts them back at load on a CPU) in half the bytes.
PRECISION_KEPT = 32
HALF_BITS = 16
PRUNE_STEP = 0.05  # the ratio grid when a knob has none of its own
SIZE_STEP_TOLERANCE = 0.002  # predicted accuracy one bit-width step may cost in the size phase
MAX_STEPS = 400
TARGET_TOLERANCE = 0.03  # targets this close (relative) count as one


class AllocationProposer(Proposer):
    origin = ALLOCATION

    def __init__(self, knowledge: Knowledge):
        self.knowledge = knowledge

    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        knowledge = self.knowledge
        # Before any accurate model, the teacher's neighbourhood alone may not reach the budget (on
        # mnist1d, pruning by 0.25 and int8 everywhere is predicted at 0.70x and measured 0.86x
        # against a 0.75x budget): a search without a warm start then waits on the sampler for its
        # first accurate model. The walk orders its steps by measured sensitivity, so it may go
        # as far as the budget before anything has been measured.
        # The walks' targets keep the latency floor even then; what the size phase adds may go below it.
        region = knowledge.trust_region(history, open_start=True)
        fast_rows, aims = self._walks(history, region)
        # The size phase is most of the cost: only for aims that could add something even if it
        # took every layer down to the floor at no loss.
        promising = self._promising(fast_rows, [aim["floor"] for aim in aims], history, rng)
        rows = [self._shrink(fast_rows[i], _size_phase_floor(aims[i]["floor"]), region.size_floor, region.limits)
                for i in promising]
        aims = [aims[i] for i in promising]
        if not rows:
            return None
        rows = np.array(rows)
        predicted = knowledge.predict(rows)
        candidates = knowledge.encoding.decode(rows)
        usable = (knowledge.feasible(predicted) & region.contains(rows, predicted.latency_ratio, predicted.size_bytes)
                  & np.array([candidate.key not in history.tried for candidate in candidates]))
        if not usable.any():
            return None
        index = usable.nonzero()[0]
        points = knowledge.objectives(predicted.accuracy[index], predicted.latency_ratio[index], predicted.size_bytes[index])
        gains = knowledge.expected_gains(history, points, rng)
        # Allocations the front already beats are not worth a trial: on digits the two aimed at the
        # budget were predicted slower, larger and no more accurate than a model already measured
        # (and fine-tuned to 78% and 86%).
        chosen = knowledge.best_per_second(gains, rows[index])
        if chosen is None:
            return None
        best = int(index[chosen])
        return Proposal(candidates[best], ALLOCATION, predicted=predicted.record(best, **aims[best]))

    def _walks(self, history: History, region: TrustRegion) -> tuple[list[np.ndarray], list[dict[str, float]]]:
        """Every walk's rows at the targets it met, before the size phase, each with its aim
        (start, target, floor); aims an allocation trial already took are left out."""
        knowledge = self.knowledge
        floors = [f for f in FLOORS if f in self._widths()] or [None]
        budget = knowledge.budget_ratio
        # Walks from the teacher to fractions of the budget, and from each accurate model on the
        # front to fractions of its own (predicted) latency: a short search goes on from where it
        # already is, NetAdapt's way, instead of reallocating from the teacher every time.
        walks = [(FROM_TEACHER, knowledge.encoding.default, [budget * fraction for fraction in TARGETS])]
        for record in self._front_starts(history):
            start_ratio = float(knowledge.predict(record.row[None, :]).latency_ratio[0])
            walks.append((record.number, record.row, [start_ratio * fraction for fraction in BEYOND_FRONT]))
        variants = [(True, floors)]
        if floors != [None]:  # a space with bit widths to lower: walks that lower none as well
            variants.append((False, [PRECISION_KEPT]))
        plans = []  # (start's number, the floors still open per target, whether int8 is allowed, start's row)
        for start, row, targets in walks:
            targets = list(dict.fromkeys(targets))
            for precision, variant_floors in variants:
                # Before any accurate model, the walks that keep float may aim past the latency floor:
                # the size phase takes the others far below theirs (on resnet18, aimed at 0.45x, they
                # measured 0.15-0.27x), and a float walk held at 0.45x, 2.2x the teacher's speed,
                # never beat them, so the first models were still full-width 2-bit ones.
                # Aims already taken are not walked to: the walk stops at the last target still open.
                open_floors = {t: [f for f in variant_floors if not _aimed_at(start, t, f, history)] for t in targets
                               if t >= region.latency_floor or (region.open and not precision)}
                plans.append((start, {t: left for t, left in open_floors.items() if left}, precision, row))
        paths = self._speed_paths([(row, list(open_floors), precision) for _, open_floors, precision, row in plans],
                                  region.limits)
        fast_rows, aims = [], []
        for (start, open_floors, _, _), path in zip(plans, paths):
            for target, fast in path.items():
                for floor in open_floors[target]:
                    fast_rows.append(fast)
                    aims.append({"start": float(start), "target_ratio": float(target), "floor": float(floor or 0)})
        return fast_rows, aims

    def _promising(self, rows: list[np.ndarray], floors: list[float], history: History,
                   rng: np.random.Generator) -> list[int]:
        """Indices of the rows whose best case (as accurate and as fast as now, as small as every
        layer at its floor) is worth a trial."""
        if not rows:
            return []
        knowledge = self.knowledge
        now = knowledge.predict(np.array(rows))
        smallest = knowledge.predict(np.array([self._at_floor(row, _size_phase_floor(floor)) for row, floor in zip(rows, floors)]))
        points = knowledge.objectives(now.accuracy, now.latency_ratio, np.minimum(smallest.size_bytes, now.size_bytes))
        return list(np.nonzero(knowledge.worth_a_trial(knowledge.expected_gains(history, points, rng)))[0])

    def _at_floor(self, row: np.ndarray, floor: int | None) -> np.ndarray:
        """`row` with every layer the size phase may lower at `floor` bits."""
        if floor is None:
            return row
        knobs = self.knowledge.encoding.knobs
        lowest = row.copy()
        for column in self.knowledge.encoding.columns("quant"):
            options = knobs[column].domain.options
            if _option(floor) in options and decode_choice(options[int(row[column])])[0] > floor:
                lowest[column] = options.index(_option(floor))
        return lowest

    def allocate(self, target_ratio: float, floor: int | None) -> np.ndarray | None:
        """The allocation for one latency target and bit-width floor (None if the target is out of reach)."""
        row = self._speed_path(self.knowledge.encoding.default, [target_ratio]).get(target_ratio)
        return None if row is None else self._shrink(row, floor)  # outside any search: no trust region

    def _front_starts(self, history: History) -> list:
        """The accurate, feasible models on the measured front, fastest first (FRONT_STARTS of them)."""
        knowledge = self.knowledge
        accurate = [r for r in knowledge.accurate(history) if r.feasible]
        if not accurate:
            return []
        points = knowledge.objectives([r.accuracy for r in accurate], [r.latency_ratio for r in accurate],
                                      [r.size_bytes for r in accurate])
        front = [accurate[i] for i in pareto_indices(points.tolist(), ("minimize",) * 3)]
        return sorted(front, key=lambda r: r.latency_ratio)[:FRONT_STARTS]

    def _speed_path(self, start: np.ndarray, targets: list[float], limits: Limits | None = None, *,
                    precision: bool = True) -> dict[float, np.ndarray]:
        """One greedy walk from `start` (see `_walk`); `precision`: whether it may take layers to int8."""
        return self._speed_paths([(start, targets, precision)], limits)[0]

    def _speed_paths(self, walks: list[tuple[np.ndarray, list[float], bool]],
                     limits: Limits | None = None) -> list[dict[float, np.ndarray]]:
        """Greedy walks (start, targets, whether int8 is allowed) taken side by side, each round
        scoring every walk's next steps in one batch: scoring was most of a proposal's time, and
        most of that per call (resnet18: 55 steps took 1.0 ms to predict, ten times as many 4.5 ms).
        A row's steps are scored once for every walk standing on it: a walk and its precision-kept
        twin coincide until the first int8 step."""
        reached: list[dict[float, np.ndarray]] = [{} for _ in walks]
        if not walks:
            return reached
        latencies, accuracies = self.knowledge.latency_and_accuracy(np.array([start for start, _, _ in walks]))
        walkers = {i: _walk(start, targets, latencies[i], accuracies[i]) for i, (start, targets, _) in enumerate(walks)}
        replies: dict[int, tuple | None] = dict.fromkeys(walkers)
        scored: dict[tuple[bytes, bool], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        while walkers:
            standing = {}
            for i in list(walkers):
                try:
                    standing[i] = walkers[i].send(replies[i])
                except StopIteration as done:
                    reached[i] = done.value
                    del walkers[i]
            self._score_steps({(row.tobytes(), walks[i][2]): row for i, row in standing.items()}, limits, scored)
            replies = {i: self._scored_steps(row, walks[i][2], scored) for i, row in standing.items()}
        return reached

    def _score_steps(self, rows: dict[tuple[bytes, bool], np.ndarray], limits: Limits | None, scored: dict) -> None:
        """Add to `scored` the speed steps inside `limits` of each (row, whether int8 is allowed) in
        `rows` that it cannot answer yet, with their predicted latency and accuracy, in one batch."""
        wanted = {}
        for (key, precision), row in rows.items():
            if (key, True) not in scored and (key, precision) not in scored:
                # Its twin standing on the same row: score the steps with int8, which serve both.
                wanted[key, precision or (key, True) in rows] = row
        steps = {wish: self._within(self._moves(row, speed=True, floor=None, precision=wish[1]), limits)
                 for wish, row in wanted.items()}
        batch = np.concatenate([np.zeros((0, self.knowledge.encoding.width)), *steps.values()])
        if not len(batch):
            latencies = accuracies = np.zeros(0)
        else:
            latencies, accuracies = self.knowledge.latency_and_accuracy(batch)
        ends = np.cumsum([len(moves) for moves in steps.values()])
        for wish, moves, end in zip(steps, steps.values(), ends):
            scored[wish] = (moves, latencies[end - len(moves):end], accuracies[end - len(moves):end])

    def _scored_steps(self, row: np.ndarray, precision: bool, scored: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The scored speed steps from `row`; without int8, those of the steps with int8 that leave
        bit widths alone."""
        key = row.tobytes()
        if (key, precision) in scored:
            return scored[key, precision]
        moves, latencies, accuracies = scored[key, True]
        quant = self.knowledge.encoding.columns("quant")
        kept = (moves[:, quant] == row[quant]).all(axis=1)
        return moves[kept], latencies[kept], accuracies[kept]

    def _shrink(self, row: np.ndarray, floor: int | None, size_floor: float = 0.0,
                limits: Limits | None = None) -> np.ndarray:
        """Lower bit widths down to `floor` while each step is cheap in accuracy and the size stays
        at or above `size_floor` (a ratio to the teacher's bytes)."""
        knowledge = self.knowledge
        if floor is None:
            return row
        current = knowledge.predict(row[None, :])
        latency, accuracy, size = current.latency_ratio[0], current.accuracy[0], current.size_bytes[0]
        for _ in range(MAX_STEPS):
            moves = self._within(self._moves(row, speed=False, floor=floor), limits)
            if len(moves) == 0:
                break
            predicted = knowledge.predict(moves)
            saved = np.log(size) - np.log(predicted.size_bytes)
            lost = accuracy - predicted.accuracy
            allowed = ((saved > 0) & (lost <= SIZE_STEP_TOLERANCE) & (predicted.latency_ratio <= latency * 1.01)
                       & (predicted.size_bytes / knowledge.teacher_size >= size_floor))
            if not allowed.any():
                break
            best = int(np.argmax(np.where(allowed, saved / (np.maximum(lost, 0.0) + 1e-5), -np.inf)))
            row = moves[best]
            latency, accuracy, size = predicted.latency_ratio[best], predicted.accuracy[best], predicted.size_bytes[best]
        return row

    def _within(self, moves: np.ndarray, limits: Limits | None) -> np.ndarray:
        """The moves inside the trust region's knob limits (all of them without limits)."""
        if limits is None or len(moves) == 0:
            return moves
        return moves[self.knowledge.levels.within(moves, limits)]

    def _moves(self, row: np.ndarray, *, speed: bool, floor: int | None, precision: bool = True) -> np.ndarray:
        """Every single-knob step from `row`: for speed, pruning, int8 (and every float layer at int8
        at once), separable and low rank; for size, a layer's next lower width down to `floor` (at
        the float16 floor: float16 alone, and every layer at once)."""
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
        integer = row.copy()  # every float layer at int8
        lowest = row.copy()  # every layer a width lower, for the float16 size phase
        for column in encoding.columns("quant"):
            options = knobs[column].domain.options
            bits, _ = decode_choice(options[int(row[column])])
            if speed and precision and bits > INTEGER_BITS and "8-uniform" in options:
                moves.append(_with(row, column, options.index("8-uniform")))
                integer[column] = options.index("8-uniform")
            if not speed and floor is not None:
                widths = (HALF_BITS,) if floor == HALF_BITS else (INTEGER_BITS, 4, 2)
                lower = [b for b in widths if floor <= b < bits and _option(b) in options]
                if lower:
                    moves.append(_with(row, column, options.index(_option(max(lower)))))
                    lowest[column] = options.index(_option(max(lower)))
        if speed and precision and np.count_nonzero(integer != row) > 1:
            moves.append(integer)
        # float16 costs no accuracy and no latency by prediction, so the size phase would take
        # every layer one step at a time (21 steps on resnet18, each scoring every layer): all at once.
        if floor == HALF_BITS and np.count_nonzero(lowest != row) > 1:
            moves.append(lowest)
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


def _walk(start: np.ndarray, targets: list[float], latency: float, accuracy: float):
    """One greedy walk from `start` (predicted at `latency` and `accuracy`), as a generator: it
    yields the row it stands on and is sent that row's speed steps with their predicted latency
    and accuracy; it takes the step with the most latency saved per accuracy lost, and returns the
    row where it first met each target (targets it cannot reach left out): every target's
    allocation from a single pass."""
    pending = sorted(set(targets), reverse=True)
    row, reached = start.copy(), {}
    for _ in range(MAX_STEPS):
        while pending and latency <= pending[0]:
            reached[pending.pop(0)] = row.copy()
        if not pending:
            break
        moves, latencies, accuracies = yield row
        saved = latency - latencies
        lost = np.maximum(accuracy - accuracies, 0.0) + 1e-5
        useful = saved > 1e-4
        if not useful.any():
            break
        best = int(np.argmax(np.where(useful, saved / lost, -np.inf)))
        row, latency, accuracy = moves[best], latencies[best], accuracies[best]
    return reached


def _size_phase_floor(aim_floor: float) -> int | None:
    """The size phase's floor for an aim's recorded floor (None: no size phase)."""
    floor = int(aim_floor)
    return None if floor == 0 else HALF_BITS if floor == PRECISION_KEPT else floor


def _option(bits: int) -> str:
    """The quant knob's option for a size-phase width: float16 weights, or uniform integers."""
    return "16-float" if bits == HALF_BITS else f"{bits}-uniform"


def _aimed_at(start: int, target: float, floor: int | None, history: History) -> bool:
    """Whether an allocation trial already walked from `start` (a trial's number, or FROM_TEACHER)
    to (about) this latency target with this floor. The predictors move after every trial, so the
    same aim gives a slightly different allocation each time: on digits, three of thirteen trials
    went to the budget's own target, 11 s each."""
    return any(r.origin == ALLOCATION and r.predicted and int(r.predicted.get("start", FROM_TEACHER)) == start
               and abs(float(r.predicted.get("target_ratio", -1.0)) / target - 1.0) < TARGET_TOLERANCE
               and float(r.predicted.get("floor", 0.0)) == float(floor or 0)
               for r in history.records)


def _with(row: np.ndarray, column: int, value: float) -> np.ndarray:
    changed = row.copy()
    changed[column] = value
    return changed
