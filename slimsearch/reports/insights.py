"""What the report says about a run, computed from its frames: hypervolume, knee, recommended model.

Everything here is plain data (DataFrames and small dataclasses) so that it can be tested
without drawing anything; `reports.figures` and `reports.html` only render it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from slimsearch.reports.data import STAGES, knob_lines, recommended
from slimsearch.search.origins import LONG_FINETUNE
from slimsearch.search.pareto import hypervolume

# Hypervolume reference point in normalised objectives (all minimised):
#   accuracy loss = clip(1 - accuracy / teacher accuracy, 0, 1)
#   latency       = latency / teacher latency (the teacher timed in the trial's own window)
#   size          = size in bytes / teacher size in bytes
# (1, 1, 1) is a model with zero accuracy, the teacher's latency and the teacher's size: the
# volume then reads as "share of the box between a perfect, free model and doing nothing", so
# 1.0 is unreachable and runs on one task and budget compare directly. A model slower or
# bigger than the teacher adds nothing.
HV_REFERENCE = (1.0, 1.0, 1.0)


def normalised_objectives(trials: pd.DataFrame, teacher: dict[str, Any]) -> pd.DataFrame:
    """accuracy_loss, latency, size per trial, relative to the teacher (see HV_REFERENCE)."""
    teacher_accuracy = float(teacher.get("val_accuracy") or math.nan)
    # The ratio to the teacher timed beside the trial is what drift cannot fake (DESIGN §3).
    teacher_latency = trials["teacher_latency_ms"].astype(float).fillna(float(teacher.get("latency_ms") or math.nan))
    return pd.DataFrame({
        "accuracy_loss": (1.0 - trials["accuracy"].astype(float) / teacher_accuracy).clip(0.0, 1.0),
        "latency": trials["latency_ms"].astype(float) / teacher_latency,
        "size": trials["size_bytes"].astype(float) / float(teacher.get("size_bytes") or math.nan),
    }, index=trials.index)


def fine_tuned_feasible(trials: pd.DataFrame) -> pd.Series:
    """The trials that can be on the front: complete, within budget and fine-tuned."""
    return (trials["state"] == "complete") & trials["feasible"].astype(bool) & trials["stopped_early"].isna()


def hypervolume_history(trials: pd.DataFrame, teacher: dict[str, Any]) -> pd.DataFrame:
    """Per trial number: hypervolume of the feasible fine-tuned trials so far, and the feasible share.

    Trials are taken in number order (the order the sampler asked for them); with parallel
    workers a later number can finish first, which only shifts a step by a trial or two.
    """
    ordered = trials.sort_values("trial").reset_index(drop=True)
    objectives = normalised_objectives(ordered, teacher)[["accuracy_loss", "latency", "size"]]
    eligible = fine_tuned_feasible(ordered).to_numpy()
    finished = ordered["state"].isin(["complete", "fail"]).to_numpy()
    points, volumes, shares = [], [], []
    for i in range(len(ordered)):
        point = objectives.iloc[i].to_numpy(dtype=float)
        if eligible[i] and np.isfinite(point).all():
            points.append(point.tolist())
        volumes.append(hypervolume(points, HV_REFERENCE))
        done = finished[: i + 1].sum()
        shares.append(ordered["feasible"].iloc[: i + 1].astype(bool).sum() / done if done else math.nan)
    return pd.DataFrame({"trial": ordered["trial"].astype(int), "hypervolume": volumes, "feasible_share": shares})


def knee_trial(front: pd.DataFrame) -> int | None:
    """The knee of the latency–accuracy front: where trading latency for accuracy stops paying.

    Take the front's points that are non-dominated in (latency, accuracy) alone, scale both
    axes to [0, 1] over those points (so neither unit dominates the distance), and draw the
    straight line from the fastest to the most accurate. The knee is the point farthest from
    that line on the good side (faster and more accurate than the straight trade-off). None
    when fewer than three such points exist or none lies above the line.
    """
    if len(front) < 3:
        return None
    frame = front[["trial", "latency_ms", "accuracy"]].dropna().sort_values(["latency_ms", "accuracy"],
                                                                            ascending=[True, False])
    best, keep = -math.inf, []
    for row in frame.itertuples():
        if row.accuracy > best:
            keep.append(row)
            best = row.accuracy
    if len(keep) < 3:
        return None
    latency = np.array([r.latency_ms for r in keep], dtype=float)
    accuracy = np.array([r.accuracy for r in keep], dtype=float)
    x = (latency - latency.min()) / (np.ptp(latency) or 1.0)
    y = (accuracy - accuracy.min()) / (np.ptp(accuracy) or 1.0)
    # Fastest is (0, 0) and most accurate (1, 1) after scaling, so the line is y = x and a
    # point's signed distance above it is (y - x) / sqrt(2).
    distance = (y - x) / math.sqrt(2.0)
    inner = distance[1:-1]
    if inner.size == 0 or inner.max() <= 1e-12:
        return None
    return int(keep[1 + int(inner.argmax())].trial)


@dataclass(frozen=True)
class Pick:
    """A front model the report singles out, with its figures against the teacher."""

    role: str
    trial: int
    accuracy: float
    test_accuracy: float | None
    latency_ms: float
    size_bytes: float
    speedup: float
    size_ratio: float          # teacher size / model size: 2.0 means half the bytes
    accuracy_change: float     # model accuracy - teacher accuracy (validation), in [-1, 1]
    knobs: tuple[str, ...]


def _pick(role: str, row: dict[str, Any], teacher: dict[str, Any]) -> Pick:
    teacher_latency = row.get("teacher_latency_ms") or teacher.get("latency_ms") or math.nan
    speedup = row.get("speedup")
    if speedup is None or not np.isfinite(speedup):
        speedup = teacher_latency / row["latency_ms"]
    test = row.get("test_accuracy")
    return Pick(role=role, trial=int(row["trial"]), accuracy=float(row["accuracy"]),
                test_accuracy=float(test) if test is not None and np.isfinite(test) else None,
                latency_ms=float(row["latency_ms"]), size_bytes=float(row["size_bytes"]), speedup=float(speedup),
                size_ratio=float(teacher.get("size_bytes") or math.nan) / float(row["size_bytes"]),
                accuracy_change=float(row["accuracy"]) - float(teacher.get("val_accuracy") or math.nan),
                knobs=tuple(knob_lines(row.get("candidate"))))


def picks(front: pd.DataFrame, teacher: dict[str, Any]) -> dict[str, Pick | None]:
    """The recommended model (best accuracy under the budget) and the knee, when the front has them."""
    best = recommended(front)
    knee = knee_trial(front)
    knee_row = front[front["trial"] == knee].iloc[0].to_dict() if knee is not None else None
    return {"recommended": _pick("recommended", best, teacher) if best else None,
            "knee": _pick("knee", knee_row, teacher) if knee_row else None}


def stage_seconds(trials: pd.DataFrame) -> pd.DataFrame:
    """Seconds per trial in each stage, plus the engine's own bookkeeping (duration minus the stages)."""
    stages = [f"seconds_{name}" for name in STAGES]
    frame = trials[["trial", "state", *stages, "duration_s"]].copy()
    frame[stages] = frame[stages].astype(float).fillna(0.0)
    frame["seconds_engine"] = (frame["duration_s"].astype(float) - frame[stages].sum(axis=1)).clip(lower=0.0)
    return frame.rename(columns={name: name.removeprefix("seconds_") for name in [*stages, "seconds_engine"]})


def origin_table(trials: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
    """Per origin (search/origins.py): trials proposed, fine-tuned within budget, and models on the front."""
    eligible = fine_tuned_feasible(trials)
    frame = pd.DataFrame({
        "trials": trials.groupby("origin").size(),
        "fine_tuned_feasible": trials[eligible].groupby("origin").size(),
        "on_front": front.groupby("origin").size() if len(front) else pd.Series(dtype=int),
    }).fillna(0).astype(int)
    return frame.sort_values(["on_front", "trials"], ascending=False).rename_axis("origin").reset_index()


def predictor_errors(trials: pd.DataFrame) -> dict[str, float]:
    """How far the proposers' predictions, made before each trial ran, were from what it measured:
    the latency's median absolute percentage error (against the trial's first measurement, an
    early-exit model's lower bound) and the rank correlation of predicted and measured accuracy
    over the fine-tuned trials. Held out by construction: no prediction saw its own trial. Long
    fine-tunes are left out."""
    from slimsearch.search.predictors import spearman

    # A long fine-tune's expectation is a measured model's own latency and size with a share of
    # its loss won back: no prediction of the predictors', and its latency is a re-measurement.
    if "origin" in trials:
        trials = trials[trials["origin"] != LONG_FINETUNE]
    timed = trials.dropna(subset=["predicted_latency_ratio", "first_latency_ratio"])
    errors = (timed["predicted_latency_ratio"].astype(float) / timed["first_latency_ratio"].astype(float) - 1.0).abs()
    tuned = trials[fine_tuned_feasible(trials) | ((trials["state"] == "complete") & trials["stopped_early"].isna())]
    tuned = tuned.dropna(subset=["predicted_accuracy", "accuracy"])
    return {
        "latency_mape": float(errors.median()) if len(errors) else math.nan,
        "latency_samples": int(len(errors)),
        "accuracy_spearman": spearman(tuned["predicted_accuracy"].astype(float).tolist(),
                                      tuned["accuracy"].astype(float).tolist()),
        "accuracy_samples": int(len(tuned)),
    }
