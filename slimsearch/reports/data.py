"""Results as data first: every trial and the Pareto front as DataFrames, drawn elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from slimsearch.search.pareto import pareto_indices
from slimsearch.search.storage import DIRECTIONS

TEACHER_ATTR = "teacher"

TRIAL_COLUMNS = [
    "trial", "state", "accuracy", "test_accuracy", "latency_ms", "latency_iqr_ms", "teacher_latency_ms",
    "speedup", "size_bytes", "onnx_bytes", "params_count", "feasible", "stopped_early", "fail_reason",
    "seconds_build", "seconds_latency", "seconds_finetune", "seconds_evaluate", "duration_s", "candidate",
]


def teacher_info(study) -> dict[str, Any]:
    return dict(study.user_attrs.get(TEACHER_ATTR, {}))


def trials_frame(study) -> pd.DataFrame:
    """One row per trial, in trial order, whatever its state."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        values = trial.values or [None, None, None]
        seconds = attrs.get("seconds", {})
        rows.append({
            "trial": trial.number,
            "state": trial.state.name.lower(),
            "accuracy": values[0],
            "test_accuracy": attrs.get("test_accuracy"),
            "latency_ms": values[1],
            "latency_iqr_ms": attrs.get("latency", {}).get("iqr_ms"),
            "teacher_latency_ms": attrs.get("teacher_latency_ms"),
            "speedup": attrs.get("speedup"),
            "size_bytes": int(values[2]) if values[2] is not None else None,
            "onnx_bytes": attrs.get("onnx_bytes"),
            "params_count": attrs.get("params_count"),
            "feasible": bool(attrs.get("feasible", False)) and trial.state.name == "COMPLETE",
            "stopped_early": attrs.get("stopped_early"),
            "fail_reason": attrs.get("fail_reason"),
            **{f"seconds_{name}": seconds.get(name) for name in ("build", "latency", "finetune", "evaluate")},
            "duration_s": trial.duration.total_seconds() if trial.duration else None,
            "candidate": json.dumps(attrs["candidate"], sort_keys=True) if "candidate" in attrs else None,
        })
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def front_frame(study) -> pd.DataFrame:
    """The Pareto front of feasible, fine-tuned trials, fastest first, with the teacher's figures beside."""
    trials = trials_frame(study)
    feasible = trials[trials["feasible"] & trials["stopped_early"].isna()].reset_index(drop=True)
    points = feasible[["accuracy", "latency_ms", "size_bytes"]].to_numpy(dtype=float).tolist()
    front = feasible.iloc[pareto_indices(points, DIRECTIONS)].copy()
    teacher = teacher_info(study)
    front.insert(3, "teacher_accuracy", teacher.get("val_accuracy"))
    front.insert(4, "teacher_test_accuracy", teacher.get("test_accuracy"))
    front["teacher_size_bytes"] = teacher.get("size_bytes")
    return front.sort_values(["latency_ms", "trial"]).reset_index(drop=True)


def front_records(study) -> list[dict[str, Any]]:
    """The front as JSON-ready records; `candidate` is the candidate's JSON object, not a string."""
    records = []
    for row in front_frame(study).to_dict(orient="records"):
        row = {key: (None if isinstance(value, float) and pd.isna(value) else value) for key, value in row.items()}
        row["candidate"] = json.loads(row["candidate"])
        records.append(row)
    return records


def recommended(front: pd.DataFrame) -> dict[str, Any] | None:
    """The most accurate feasible model (ties go to the faster one)."""
    if front.empty:
        return None
    return front.sort_values(["accuracy", "latency_ms"], ascending=[False, True]).iloc[0].to_dict()
