"""The budget preflight: time the teacher and the fastest-looking candidates before any trial, and
refuse a budget only when none of them can meet it.

The most compressed candidate (every knob at its extreme) is not always the fastest: on a small
model every separable pair, low-rank split and quantize / dequantize pair is one more node for the
runtime to dispatch, and one more node costs more than the arithmetic it saves. So the preflight
times, in order, until one meets the budget: the extreme candidate; each family's extreme alone
(pruning alone, every exit alone, ...); pruning with exits; and the warm start's first points
(pruning 0.5 with int8, an exit, the hand baseline's strongest pruning). A budget is refused only
when the fastest of them is over it by more than the latency margin, which is the noise a trial is
allowed too. Every timing lands in the latency cache, so the trials that build the same
architectures later are not timed twice.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from slimsearch.errors import InfeasibleBudgetError
from slimsearch.evaluators.size import packed_size_bytes, parameter_count
from slimsearch.spaces import Candidate, Space
from slimsearch.spaces.warm_start import hand_baseline, starting_candidates

# The warm start's points worth timing here: pruning 0.5 with int8, one exit, every exit with pruning.
WARM_START_POINTS = 3


def preflight(context, console: Console) -> dict:
    """The teacher's figures for the study, once the budget is known to be reachable."""
    config, task = context.config, context.task
    budget, margin = config.latency_budget, config.latency.margin
    timed: list[tuple[str, float, float, float]] = []  # (candidate, its latency, the teacher's and its IQR in that window)
    failures: list[str] = []
    for label, candidate in fast_candidates(context.space):
        try:
            measured = _measure(context, candidate)
        except Exception as error:  # a user model may not survive a candidate; its trials will say so
            failures.append(f"{label} ({type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''})")
            continue
        timed.append((label, measured.student.value_ms, measured.teacher.value_ms, measured.teacher.iqr_ms))
        if budget.violation(measured.student.value_ms, measured.teacher.value_ms) <= 0:
            break
    if not timed:
        console.print(f"warning: no candidate could be built or timed ({'; '.join(failures[:2])}); the budget is not "
                      f"checked up front", highlight=False, markup=False, soft_wrap=True)
        teacher = context.measure_teacher()
        teacher_ms, teacher_iqr_ms, fastest_ms = teacher.median_ms, teacher.iqr_ms, None
    else:
        label, fastest_ms, window_teacher_ms, _ = min(timed, key=lambda row: row[1] / row[2])
        _, _, teacher_ms, teacher_iqr_ms = timed[0]
        if budget.violation(fastest_ms, window_teacher_ms) > margin:
            target = config.target
            raise InfeasibleBudgetError(
                f"latency budget {budget} cannot be met: the fastest of the {len(timed)} candidates timed in this "
                f"space ({label}) measures {fastest_ms:.3f} ms against the teacher's {window_teacher_ms:.3f} ms "
                f"({target.runtime} on {target.device}, batch {target.batch_size}, {target.threads} thread(s)); "
                f"allowed: a budget above {fastest_ms:.3f}ms or {fastest_ms / window_teacher_ms:.2f}x"
            )
    from slimsearch.evaluators.accuracy import accuracy

    exporter = _teacher_exporter(context)
    if exporter == "dynamo":
        console.print("The teacher exports to ONNX through torch's dynamo exporter (the TorchScript exporter cannot "
                      "export one of its operators); candidates fall back the same way.", highlight=False,
                      markup=False, soft_wrap=True)
    return {
        "onnx_exporter": exporter,
        "latency_ms": teacher_ms,
        "latency_iqr_ms": teacher_iqr_ms,
        "fastest_candidate_latency_ms": fastest_ms,
        "preflight_timed": [{"candidate": label, "latency_ms": ms, "teacher_latency_ms": teacher}
                            for label, ms, teacher, _ in timed],
        "val_accuracy": accuracy(task.teacher, task.val, workers=task.loader_workers),
        "test_accuracy": accuracy(task.teacher, task.test, workers=task.loader_workers),
        **({"search_val_accuracy": accuracy(task.teacher, task.search_val, workers=task.loader_workers),
            "val_samples": len(task.search_val)} if task.val_is_subset else {}),
        "size_bytes": packed_size_bytes(task.teacher),
        "params_count": parameter_count(task.teacher),
        "name": task.name,
    }


def fast_candidates(space: Space) -> list[tuple[str, Candidate]]:
    """(label, candidate) in the order the preflight times them, without repeats or the teacher."""
    defaults = space.default_candidate().to_dict()["choices"]
    per_layer: dict[str, dict[str, object]] = {}
    for knob in space.knobs:
        if knob.stage is not None:
            per_layer.setdefault(knob.family, {})[knob.target] = knob.extreme

    def only(*families: str) -> Candidate:
        return Candidate({**defaults, **{f: {**defaults.get(f, {}), **per_layer[f]} for f in families if f in per_layer}})

    points = [("the most compressed candidate", space.extreme_candidate())]
    points += [(f"{family} alone at its extreme", only(family)) for family in per_layer]
    points.append(("pruning and exits at their extremes", only("prune", "exits")))
    warm = starting_candidates(space)[:WARM_START_POINTS] + hand_baseline(space, ratios=(0.8,))
    points += [(f"warm-start point {index + 1}", candidate) for index, candidate in enumerate(warm)]
    teacher = space.default_candidate()
    seen, unique = set(), []
    for label, candidate in points:
        if candidate != teacher and candidate not in seen:
            seen.add(candidate)
            unique.append((label, candidate))
    return unique


def _teacher_exporter(context) -> str | None:
    """Which ONNX exporter wrote the teacher this process times against (None off ONNX Runtime)."""
    from slimsearch.evaluators.deploy import exporter_of

    measurer = getattr(context, "measurer", None)
    teacher_onnx = getattr(measurer, "teacher_onnx", None)
    return exporter_of(teacher_onnx) if teacher_onnx is not None else None


def _measure(context, candidate: Candidate):
    """The candidate as built (an early-exit one at its lower bound) against the teacher, one window."""
    from slimsearch.techniques import build_student

    config, task = context.config, context.task
    # Uncalibrated is fine: the deployed form calibrates its int8 layers itself (quantized_deploy.py).
    student = build_student(candidate, task.teacher, task.example_input, config.space)
    with tempfile.TemporaryDirectory(prefix="slimsearch-preflight-") as tmp:
        measured, _ = context.measure(student, Path(tmp), lower_bound=True)
    return measured
