"""Layer sensitivity: one cheap pass before a search, NetAdapt-style.

Each knob is changed alone, the others left as the teacher has them, and the validation
accuracy of that one-change model is taken as it is built, without fine-tuning:
- each prunable group at every ratio of PRUNE_PROBES (capped at space.max_prune_ratio): one, as
  the proposers read pruning sensitivity as an order of the groups, which one ratio gives;
- each quantizable layer at every width of QUANT_PROBES the space allows (4 and 2 bits, uniform);
- each separable-eligible conv substituted, and each low-rank layer at its smallest rank.

That costs one model build and one validation pass per probe: seconds, against minutes per
fine-tuned trial. An untuned accuracy is a coarse signal of what fine-tuning will recover, but
its order across layers is informative, and it is what the proposers shape their candidates by
(spaces/genome.py ranks layers by it; search/predictors.py sums it into an accuracy model
calibrated on finished trials).

The result is kept as `sensitivity.json` in the run folder and in the study (search/priors.py),
so a resumed search and every worker of it start from the same priors without redoing the pass.
"""

from __future__ import annotations

import time
from typing import Any

from slimsearch.config import SpaceConfig
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, FloatRange, Knob
from slimsearch.spaces.space import Space
from slimsearch.tasks.base import Task

PRUNE_PROBES = (0.5,)
QUANT_PROBES = ("4-uniform", "2-uniform")
# Probed on at most this many validation samples: enough to rank layers, bounded on large splits.
PROBE_SAMPLES = 512


def layer_sensitivity(space: Space, task: Task, settings: SpaceConfig, *, seconds: float | None = None) -> dict[str, Any]:
    """{"teacher_accuracy", "probes": {family: {target: {value: accuracy}}}, "prune": {layer:
    accuracy at 0.5}, "quant": {layer: accuracy at 4 bits}, "seconds", "complete"}.

    Values are keyed by their JSON text ("0.5", "4-uniform", "true", "0.125"), as they are stored.
    With `seconds`, the pass stops when that time is spent (`complete` is then False): probes run
    in order of what they tell the proposers (`probe_plan`), so a cut pass keeps the most useful.
    """
    from slimsearch.techniques import build_student
    from slimsearch.techniques.quantization import calibrate, calibrate_one_layer, input_ranges

    started = time.perf_counter()
    val = _subset(task.search_val, PROBE_SAMPLES)  # the trials' validation data, or the first of it
    base = space.default_candidate().to_dict()["choices"]
    probes: dict[str, dict[str, dict[str, float]]] = {}
    plan = probe_plan(space)
    # A quant probe quantizes one layer, so its activation range is the float teacher's: measured
    # once for every layer, at the first quant probe, rather than by a calibration pass per probe.
    ranges = None
    done, failed = 0, []
    for knob, value in plan:
        if seconds is not None and time.perf_counter() - started > seconds:
            break
        candidate = Candidate({**base, knob.family: {**base.get(knob.family, {}), knob.target: value}})
        done += 1
        try:
            student = build_student(candidate, task.teacher, task.example_input, settings)
            if knob.family == "quant":
                if ranges is None:
                    ranges = input_ranges(task.teacher, task.calibration_inputs(),
                                          {k.target for k, _ in plan if k.family == "quant"})
                if not calibrate_one_layer(student, ranges):
                    calibrate(student, task.calibration_inputs())
            measured = accuracy(student, val, workers=task.loader_workers)
        except Exception as error:  # a user model may not take this change; its trials will say so
            failed.append(f"{knob.family} {knob.target} at {value_key(value)}: {type(error).__name__}: {error}"[:300])
            continue
        probes.setdefault(knob.family, {}).setdefault(knob.target, {})[value_key(value)] = measured
    return {
        "teacher_accuracy": accuracy(task.teacher, val, workers=task.loader_workers),
        "probes": probes,
        # The single-figure views the warm start reads (spaces/warm_start.py).
        "prune": {target: by_value[value_key(_capped(PRUNE_PROBES[0], space, target))]
                  for target, by_value in probes.get("prune", {}).items()
                  if value_key(_capped(PRUNE_PROBES[0], space, target)) in by_value},
        "quant": {target: by_value[value_key(QUANT_PROBES[0])] for target, by_value in probes.get("quant", {}).items()
                  if value_key(QUANT_PROBES[0]) in by_value},
        "seconds": round(time.perf_counter() - started, 3),
        "complete": done == len(plan),
        "failed": failed,
    }


def probe_plan(space: Space) -> list[tuple[Knob, Any]]:
    """Every (knob, value) to probe, the most telling first: one probe per layer for each family
    (the lowest bit width, half the channels, the separable pair, the smallest rank), then the
    second bit width and the harder prune ratio."""
    first, second = [], []
    for knob in space.knobs:
        values = probe_values(knob)
        if knob.family == "quant":
            values = sorted(values, key=lambda v: int(str(v).split("-")[0]))  # 2 bits before 4
        if values:
            first.append((knob, values[0]))
            second += [(knob, value) for value in values[1:]]
    return first + second


def probe_values(knob: Knob) -> list[Any]:
    """The values a knob is probed at (none for run-wide knobs and families with nothing to probe)."""
    domain = knob.domain
    if knob.family == "prune" and isinstance(domain, FloatRange):
        return list(dict.fromkeys(min(max(ratio, domain.low), domain.high) for ratio in PRUNE_PROBES))
    if knob.family == "quant" and isinstance(domain, Choice):
        return [value for value in QUANT_PROBES if value in domain.options]
    if knob.family == "separable" and isinstance(domain, Choice) and True in domain.options:
        return [True]
    if knob.family == "lowrank" and isinstance(domain, Choice):
        smallest = min(domain.options)
        return [smallest] if smallest < 1 else []
    return []


def value_key(value: Any) -> str:
    import json

    return json.dumps(value)


def _capped(ratio: float, space: Space, target: str) -> float:
    knob = next(k for k in space.knobs if k.family == "prune" and k.target == target)
    return min(max(ratio, knob.domain.low), knob.domain.high)


def _subset(dataset, samples: int):
    """The first `samples` of a split (all of it if it is smaller), without loading the rest."""
    from torch.utils.data import Subset, TensorDataset

    if len(dataset) <= samples:
        return dataset
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return TensorDataset(*(tensor[:samples] for tensor in tensors))
    return Subset(dataset, range(samples))
