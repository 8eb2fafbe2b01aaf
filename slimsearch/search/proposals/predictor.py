"""Predictor-guided search (OFA / APQ style): thousands of candidates scored on the predictors,
the one expected to add the most to the front per second proposed for a real trial.

The pool is drawn fresh for every proposal:
- random genomes (spaces/genome.py): sensible allocations of every intensity;
- per-layer mutations of the measured front: one to three knobs moved a step each, which is
  how per-layer freedom beyond the genome is reached;
- crossovers of two front members, layer by layer.
Each is scored by the hypervolume it is predicted to add to the front of fine-tuned, feasible
trials (with the running trials' predicted points counted in, so parallel workers spread out),
its accuracy taken half a typical prediction error optimistically, among those predicted
within the latency budget and inside the trust region (search/proposals/trust.py: a step past
an accurate model measured so far, and not nearly as fast and as small as a model that
fine-tuned badly). Of those worth a trial (Knowledge.worth_a_trial), the one expected to add
the most per second of its trial is proposed (Knowledge.best_per_second); when none is, it passes
its turn. A prediction never stands in for a measurement: the chosen candidate is trained and
measured like any other.
"""

from __future__ import annotations

import numpy as np

from slimsearch.search.origins import PREDICTOR
from slimsearch.search.proposals.base import History, Proposal, Proposer
from slimsearch.search.proposals.knowledge import Knowledge
from slimsearch.spaces.genome import Genome
from slimsearch.spaces.knobs import Choice, FloatRange

RANDOM_GENOMES = 800
MUTANTS_PER_PARENT = 40
CROSSOVERS = 120
SHORTLIST = 120  # candidates whose hypervolume gain is estimated (the rest ranked out cheaply)
OPTIMISM = 0.5  # in units of the accuracy predictor's typical error


class PredictorProposer(Proposer):
    origin = PREDICTOR

    def __init__(self, knowledge: Knowledge):
        self.knowledge = knowledge

    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        knowledge = self.knowledge
        pool = candidate_pool(knowledge, history, rng)
        if len(pool) == 0:
            return None
        predicted = knowledge.predict(pool)
        region = knowledge.trust_region(history)
        feasible = knowledge.feasible(predicted) & region.contains(pool, predicted.latency_ratio, predicted.size_bytes)
        if not feasible.any():
            return None
        pool = pool[feasible]
        accuracy = predicted.accuracy[feasible] + OPTIMISM * knowledge.accuracy.residual
        points = knowledge.objectives(accuracy, predicted.latency_ratio[feasible], predicted.size_bytes[feasible])
        front = np.vstack([knowledge.front_points(history), knowledge.pending_points(history)])
        order = _shortlist(points, front, knowledge.reference)
        if len(order) == 0:
            return None
        gains = knowledge.expected_gains(history, points[order], rng)
        # Nothing expected to add much (near twins of the front's models, differing in what the
        # predictors cannot tell apart, such as the distillation knobs): the other proposers' turn.
        chosen = knowledge.best_per_second(gains, pool[order])
        if chosen is None:
            return None
        best = order[chosen]
        candidate = knowledge.encoding.decode(pool[best][None, :])[0]
        if candidate.key in history.tried:  # the pool excluded tried rows, but ties can collapse two rows into one
            return None
        row = feasible.nonzero()[0][best]
        return Proposal(candidate, PREDICTOR, predicted=predicted.record(row))


def candidate_pool(knowledge: Knowledge, history: History, rng: np.random.Generator) -> np.ndarray:
    """Encoded rows, untried and distinct: random genomes, and mutations and crossovers of the front."""
    encoding = knowledge.encoding
    parts = [random_genomes(knowledge.genome, RANDOM_GENOMES, rng)]
    parents = front_rows(knowledge, history)
    if len(parents):
        parts.append(mutants(knowledge, parents, MUTANTS_PER_PARENT, rng))
        if len(parents) > 1:
            parts.append(crossovers(parents, CROSSOVERS, rng))
    pool = encoding.snap(np.vstack(parts))
    keys = encoding.keys(pool)
    tried_rows = [r.row for r in history.records if r.row is not None]  # the running trial may have none yet
    tried = set(encoding.keys(np.array(tried_rows))) if tried_rows else set()
    keep, seen = [], set()
    for index, key in enumerate(keys):
        if key not in tried and key not in seen:
            seen.add(key)
            keep.append(index)
    return pool[keep]


def random_genomes(genome: Genome, count: int, rng: np.random.Generator) -> np.ndarray:
    return genome.random_rows(count, rng)


def front_rows(knowledge: Knowledge, history: History) -> np.ndarray:
    """Encoded rows of the measured front (fine-tuned, feasible, non-dominated, not too inaccurate)."""
    from slimsearch.search.pareto import pareto_indices

    records = [r for r in history.fine_tuned() if r.feasible and r.latency_ratio and r.size_bytes]
    if not records:
        return np.zeros((0, knowledge.encoding.width))
    points = knowledge.objectives([r.accuracy for r in records], [r.latency_ratio for r in records],
                                  [r.size_bytes for r in records])
    # Parents worth varying: on the front and within the loss the hypervolume counts.
    front = [i for i in pareto_indices(points.tolist(), ("minimize",) * 3) if points[i, 0] < knowledge.reference[0]]
    return np.array([records[i].row for i in front]).reshape(len(front), knowledge.encoding.width)


def mutants(knowledge: Knowledge, parents: np.ndarray, per_parent: int, rng: np.random.Generator) -> np.ndarray:
    """Each parent with one to three knobs moved: a range by one or two steps, a choice to a neighbour."""
    knobs = knowledge.encoding.knobs
    rows = np.repeat(parents, per_parent, axis=0)
    for row in rows:
        for column in rng.choice(len(knobs), size=int(rng.integers(1, 4)), replace=False):
            domain = knobs[column].domain
            if isinstance(domain, FloatRange):
                step = domain.step or (domain.high - domain.low) / 10
                row[column] += step * rng.choice([-2, -1, 1, 2])
            elif isinstance(domain, Choice) and len(domain.options) > 1:
                row[column] = (row[column] + rng.choice([-1, 1])) % len(domain.options)
    return rows


def crossovers(parents: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    first = parents[rng.integers(len(parents), size=count)]
    second = parents[rng.integers(len(parents), size=count)]
    mask = rng.random(first.shape) < 0.5
    return np.where(mask, first, second)


def _shortlist(points: np.ndarray, front: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Indices of the points worth an exact look (none, when nothing is predicted to add): within
    the reference box, not dominated by the front, the best SHORTLIST by the volume of the box
    they span with the reference."""
    inside = np.all(points < reference, axis=1)
    if len(front):
        dominated = np.zeros(len(points), dtype=bool)
        for member in front:
            dominated |= np.all(member <= points, axis=1)
        candidates = np.nonzero(inside & ~dominated)[0]
    else:
        candidates = np.nonzero(inside)[0]
    box = np.prod(np.maximum(reference - points[candidates], 0.0), axis=1)
    return candidates[np.argsort(-box)[:SHORTLIST]]
