"""The Pareto front of feasible trials: best accuracy, lowest latency, smallest size."""

from __future__ import annotations

from typing import Sequence


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True if `a` is at least as good as `b` in every objective and better in one."""
    better = False
    for x, y, direction in zip(a, b, directions):
        if direction == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def pareto_indices(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (duplicates all stay on the front)."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i)]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by `points` and bounded by `reference`, every objective minimised.

    Points that are not strictly better than `reference` in every objective add nothing and are
    dropped. The volume is summed over slices along the last axis: between two consecutive
    values of it, the points at or below the slice span a (d-1)-dimensional hypervolume,
    computed the same way. That is O(n^d log n) for d >= 3, fine for the few hundred trials a
    search has (the inclusion-exclusion or WFG algorithms only pay off far beyond that).
    """
    reference = [float(r) for r in reference]
    if not reference:
        raise ValueError(f"hypervolume needs at least one objective, but got {reference=}")
    clean = []
    for point in points:
        point = [float(x) for x in point]
        if len(point) != len(reference):
            raise ValueError(f"every point needs {len(reference)} objectives like the reference, but got {point=}")
        if all(x < r for x, r in zip(point, reference)):
            clean.append(point)
    return _hypervolume(clean, reference)


def _hypervolume(points: list[list[float]], reference: list[float]) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    if len(reference) == 2:
        # The 2-D sweep: sorted by x, each point adds the strip between its y and the best y so far.
        volume, best_y = 0.0, reference[1]
        for x, y in sorted(points):
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return volume
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(ordered):
        top = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        if top > point[-1]:
            volume += (top - point[-1]) * _hypervolume([p[:-1] for p in ordered[: i + 1]], reference[:-1])
    return volume


def hypervolume_improvements(front, candidates, reference, *, samples: int = 8000, seed: int = 0):
    """For each candidate point, an estimate of how much hypervolume it adds to `front` (every
    objective minimised, bounded by `reference`): Monte Carlo over the box between the best
    values seen and the reference, with the same samples for every candidate so that their
    order is not noise. Vectorised, for ranking thousands of predicted points against a front.
    """
    import numpy as np

    candidates = np.atleast_2d(np.asarray(candidates, dtype=float))
    reference = np.asarray(reference, dtype=float)
    front = np.asarray(front, dtype=float).reshape(-1, len(reference))
    if len(candidates) == 0:
        return np.zeros(0)
    everything = np.vstack([front, candidates])
    low = np.minimum(everything.min(axis=0), reference)
    if np.any(reference - low <= 0):
        return np.zeros(len(candidates))
    rng = np.random.default_rng(seed)
    points = low + rng.random((samples, len(reference))) * (reference - low)
    covered = np.zeros(samples, dtype=bool)
    for member in front:
        covered |= np.all(points >= member, axis=1)
    open_points = points[~covered]
    if len(open_points) == 0:
        return np.zeros(len(candidates))
    volume = float(np.prod(reference - low)) / samples
    gains = np.empty(len(candidates))
    for start in range(0, len(candidates), 256):  # bounded memory: 256 x samples booleans at a time
        block = candidates[start:start + 256]
        gains[start:start + 256] = np.all(open_points[None, :, :] >= block[:, None, :], axis=2).sum(axis=1) * volume
    return gains
