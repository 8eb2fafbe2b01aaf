"""Layer sensitivity priors: one cheap pass before a search, NetAdapt-style.

Each prunable group is pruned alone at PRUNE_PROBE, and each quantizable layer is quantized
alone to QUANT_PROBE (4 bits, uniform), and the validation accuracy of that one-change model is
taken as it is built, without fine-tuning. That costs one model build and one validation pass
per knob: seconds, against minutes per fine-tuned trial. The warm start
(spaces/warm_start.py) uses it to shape its first candidates: sensitive layers are pruned less
and kept at 8 bits.

The result is kept as `sensitivity.json` in the run folder, so a resumed search (and every
worker of it) starts from the same priors without redoing the pass.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from slimsearch.config import SpaceConfig
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.knobs import Choice, FloatRange
from slimsearch.spaces.space import Space
from slimsearch.tasks.base import Task

PRUNE_PROBE = 0.5
QUANT_PROBE = "4-uniform"
FILE_NAME = "sensitivity.json"


def layer_sensitivity(space: Space, task: Task, settings: SpaceConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """{"teacher_accuracy", "prune": {layer: accuracy}, "quant": {layer: accuracy}, "seconds"}.

    Read from `run_dir/sensitivity.json` when an earlier session of the run computed it.
    """
    path = Path(run_dir) / FILE_NAME if run_dir is not None else None
    if path is not None and path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    from slimsearch.techniques import build_student
    from slimsearch.techniques.quantization import calibrate

    started = time.perf_counter()
    base = space.default_candidate().to_dict()["choices"]
    val = task.search_val  # the trials' validation data: the search-time subset when there is one
    result: dict[str, Any] = {"teacher_accuracy": accuracy(task.teacher, val, workers=task.loader_workers), "prune": {}, "quant": {},
                              "probes": {"prune": PRUNE_PROBE, "quant": QUANT_PROBE}}
    for knob in space.knobs:
        probe = _probe_value(knob)
        if probe is None:
            continue
        candidate = Candidate({**base, knob.family: {**base.get(knob.family, {}), knob.target: probe}})
        student = build_student(candidate, task.teacher, task.example_input, settings)
        if knob.family == "quant":
            calibrate(student, task.calibration_inputs())
        result[knob.family][knob.target] = accuracy(student, val, workers=task.loader_workers)
    result["seconds"] = round(time.perf_counter() - started, 3)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        tmp.replace(path)
    return result


def _probe_value(knob) -> Any:
    """The value a knob is probed at, or None for knobs this pass does not probe."""
    if knob.family == "prune" and isinstance(knob.domain, FloatRange):
        return min(max(PRUNE_PROBE, knob.domain.low), knob.domain.high)
    if knob.family == "quant" and isinstance(knob.domain, Choice) and QUANT_PROBE in knob.domain.options:
        return QUANT_PROBE
    return None
