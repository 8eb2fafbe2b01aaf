"""Results as data first: every trial and the Pareto front as DataFrames, drawn elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from slimsearch.evaluators.macs import flags as macs_flags
from slimsearch.search.origins import PREDICTED_ATTR, origin_of
from slimsearch.search.pareto import pareto_indices
from slimsearch.search.attrs import FULL_EVALUATION_ATTR
from slimsearch.search.storage import DIRECTIONS, FIRST_LATENCY_ATTR

TEACHER_ATTR = "teacher"

TRIAL_COLUMNS = [
    "trial", "state", "accuracy", "search_accuracy", "test_accuracy", "latency_ms", "latency_iqr_ms", "teacher_latency_ms",
    "speedup", "size_bytes", "onnx_bytes", "params_count", "macs", "macs_ratio", "params_ratio", "flags",
    "feasible", "stopped_early", "fail_reason",
    "seconds_build", "seconds_compile", "seconds_latency", "seconds_finetune", "seconds_evaluate", "duration_s",
    "candidate", "exit_shares", "origin", "first_latency_ratio", "predicted_accuracy", "predicted_latency_ratio", "torch_accuracy", "torch_test_accuracy",
]
# Stages a trial's time is split into (search/trial.py); compile: compiling, capturing or building
# the runtime's session for a model, kept apart from the latency it then measures.
STAGES = ("build", "compile", "latency", "finetune", "evaluate")


def teacher_info(study) -> dict[str, Any]:
    return dict(study.user_attrs.get(TEACHER_ATTR, {}))


def trials_frame(study) -> pd.DataFrame:
    """One row per trial, in trial order, whatever its state."""

    rows = []
    full = full_evaluations(study)
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        values = trial.values or [None, None, None]
        predicted = attrs.get(PREDICTED_ATTR) or {}
        seconds = attrs.get("seconds", {})
        reevaluated = full.get(trial.number, {})
        rows.append({
            "trial": trial.number,
            "state": trial.state.name.lower(),
            # The full validation split's figure where there is one (a front model re-evaluated after a
            # search scored on `val_samples`), else the figure the search scored the trial by.
            "accuracy": reevaluated.get("val_accuracy", values[0]),
            "search_accuracy": values[0],
            "test_accuracy": attrs.get("test_accuracy", reevaluated.get("test_accuracy")),
            "latency_ms": values[1],
            "latency_iqr_ms": attrs.get("latency", {}).get("iqr_ms"),
            "teacher_latency_ms": attrs.get("teacher_latency_ms"),
            "speedup": attrs.get("speedup"),
            "size_bytes": int(values[2]) if values[2] is not None else None,
            "onnx_bytes": attrs.get("onnx_bytes"),
            "params_count": attrs.get("params_count"),
            # Counted compute against the teacher, and what is odd about it beside the measured speed-up.
            "macs": attrs.get("macs"),
            "macs_ratio": attrs.get("macs_ratio"),
            "params_ratio": attrs.get("params_ratio"),
            "flags": ",".join(macs_flags(attrs.get("macs_ratio"), attrs.get("speedup"))),
            "feasible": bool(attrs.get("feasible", False)) and trial.state.name == "COMPLETE",
            "stopped_early": attrs.get("stopped_early"),
            "fail_reason": attrs.get("fail_reason"),
            **{f"seconds_{name}": seconds.get(name) for name in STAGES},
            "duration_s": trial.duration.total_seconds() if trial.duration else None,
            "candidate": json.dumps(attrs["candidate"], sort_keys=True) if "candidate" in attrs else None,
            # Early-exit models: the share of measured samples leaving at each exit ("final" last).
            "exit_shares": json.dumps(attrs["exit_shares"]) if "exit_shares" in attrs else None,
            # Which proposer chose the candidate (search/origins.py), and what it expected of it
            # before the trial ran: the predictors' honest, held-out error (reports/insights.py).
            "origin": origin_of(attrs),
            "first_latency_ratio": attrs.get(FIRST_LATENCY_ATTR),
            "predicted_accuracy": predicted.get("accuracy"),
            "predicted_latency_ratio": predicted.get("lower_bound_ratio", predicted.get("latency_ratio")),
            # Quantized and early-exit models: accuracy and test_accuracy are the deployed form's;
            # the torch model's figures (fake-quant arithmetic, exits taken in one batch) are kept
            # here (evaluators/deployed_accuracy.py).
            "torch_accuracy": attrs.get("torch_accuracy", {}).get("val"),
            "torch_test_accuracy": attrs.get("torch_accuracy", {}).get("test"),
        })
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def front_frame(study, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The Pareto front of feasible, fine-tuned trials, fastest first, with the teacher's figures beside.

    `trials` is the study's `trials_frame` when the caller has it already.
    """
    trials = trials_frame(study) if trials is None else trials
    feasible = trials[trials["feasible"] & trials["stopped_early"].isna()].reset_index(drop=True)
    # The front by the figures the search compared (the validation subset, with `val_samples`), then
    # by the full validation figures its models were re-evaluated on (the same set without a subset).
    searched = feasible[["search_accuracy", "latency_ms", "size_bytes"]].to_numpy(dtype=float).tolist()
    candidates = feasible.iloc[pareto_indices(searched, DIRECTIONS)].reset_index(drop=True)
    points = candidates[["accuracy", "latency_ms", "size_bytes"]].to_numpy(dtype=float).tolist()
    front = candidates.iloc[pareto_indices(points, DIRECTIONS)].copy()
    teacher = teacher_info(study)
    front.insert(3, "teacher_accuracy", teacher.get("val_accuracy"))
    front.insert(4, "teacher_test_accuracy", teacher.get("test_accuracy"))
    front["teacher_size_bytes"] = teacher.get("size_bytes")
    return front.sort_values(["latency_ms", "trial"]).reset_index(drop=True)


def full_evaluations(study) -> dict[int, dict[str, float]]:
    """Front models' figures on the full validation and test splits (search/reevaluate.py), by trial number."""
    stored = study.user_attrs.get(FULL_EVALUATION_ATTR) or {}
    return {int(number): figures for number, figures in stored.items()}


def search_front_trials(study) -> list:
    """The trials on the front by the search's own objectives (feasible, fully fine-tuned)."""
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    frame = trials_frame(study)
    feasible = frame[frame["feasible"] & frame["stopped_early"].isna()].reset_index(drop=True)
    searched = feasible[["search_accuracy", "latency_ms", "size_bytes"]].to_numpy(dtype=float).tolist()
    return [trials[int(number)] for number in feasible.iloc[pareto_indices(searched, DIRECTIONS)]["trial"]]


def front_records(study) -> list[dict[str, Any]]:
    """The front as JSON-ready records; `candidate` is the candidate's JSON object, not a string."""
    records = []
    for row in front_frame(study).to_dict(orient="records"):
        row = {key: (None if isinstance(value, float) and pd.isna(value) else value) for key, value in row.items()}
        row["candidate"] = json.loads(row["candidate"])
        row["exit_shares"] = exit_shares(row.get("exit_shares")) or None
        row["flags"] = [flag for flag in (row.get("flags") or "").split(",") if flag]
        records.append(row)
    return records


def recommended(front: pd.DataFrame) -> dict[str, Any] | None:
    """The most accurate feasible model (ties go to the faster one)."""
    if front.empty:
        return None
    return front.sort_values(["accuracy", "latency_ms"], ascending=[False, True]).iloc[0].to_dict()


# --- what a candidate did, per layer -----------------------------------------------------------

# Families whose choices are settings of the whole run, keyed by parameter name, not by layer.
RUN_WIDE_FAMILIES = frozenset({"distill", "precision"})
# Keys read, in order, to turn a per-layer dict choice (e.g. quant's {"bits": 8, "mode": ...}) into one number.
_NUMERIC_KEYS = ("ratio", "bits", "rank_ratio", "rank", "threshold")


def candidate_choices(candidate_json: str | None) -> dict[str, Any]:
    """The `choices` mapping of a stored candidate; {} for a trial that never got one."""
    if not isinstance(candidate_json, str):
        return {}
    try:
        choices = json.loads(candidate_json).get("choices", {})
    except (ValueError, AttributeError):
        return {}
    return choices if isinstance(choices, dict) else {}


def readable_choice(family: str, choice: Any) -> Any:
    """A choice in its long form: quant stores "8-uniform" strings (Optuna categoricals must be
    primitives), read here as {"bits": 8, "mode": "uniform"}; other choices pass through."""
    if family == "exits":
        return {"on": False} if choice == "off" else {"on": True, "threshold": choice} if isinstance(choice, (int, float)) else choice
    if family == "quant" and isinstance(choice, str):
        from slimsearch.errors import ConfigError
        from slimsearch.spaces.quant import decode_choice

        try:
            bits, mode = decode_choice(choice)
        except ConfigError:
            return choice
        return {"bits": bits, "mode": mode}
    return choice


def choice_value(choice: Any) -> float | None:
    """One number for a per-layer choice (a ratio, bits, on/off as 1/0); None when it has no number."""
    if isinstance(choice, bool):
        return float(choice)
    if isinstance(choice, (int, float)):
        return float(choice)
    if isinstance(choice, dict):
        if choice.get("on") is False:
            return 0.0
        for key in _NUMERIC_KEYS:
            if isinstance(choice.get(key), (int, float)) and not isinstance(choice.get(key), bool):
                return float(choice[key])
        if isinstance(choice.get("on"), bool):
            return float(choice["on"])
    return None


def compression_strength(family: str, value: float | None) -> float | None:
    """How much a choice changes its layer, 0 (untouched) to 1, so that families share one colour scale.

    The raw values live on different scales (a prune ratio, a bit width, a rank ratio kept), so
    the heatmap is coloured by this and labelled with the raw value.
    """
    if value is None:
        return None
    if family == "quant":
        return min(max(1.0 - value / 32.0, 0.0), 1.0)
    if family == "lowrank":
        return min(max(1.0 - value, 0.0), 1.0)
    if family in ("prune", "separable", "exits"):
        return min(max(value, 0.0), 1.0)
    return value if 0.0 <= value <= 1.0 else None


def choice_label(family: str, choice: Any) -> str:
    """A short reading of one per-layer choice for a heatmap cell (plain text, not yet escaped)."""
    if isinstance(choice, bool):
        return "on" if choice else "off"
    if isinstance(choice, float):
        return f"{choice:.2f}"
    if isinstance(choice, int):
        return str(choice)
    if isinstance(choice, dict):
        if "on" in choice and not choice["on"]:
            return "off"
        if "bits" in choice:
            mode = choice.get("mode")
            return f"{choice['bits']}b" + (f" {mode}" if mode and mode not in ("uniform", "float") else "")
        if "threshold" in choice:
            return f"on @{choice['threshold']:.2f}" if isinstance(choice["threshold"], (int, float)) else "on"
    text = json.dumps(choice, sort_keys=True, default=str)
    return text if len(text) <= 24 else text[:23] + "…"


def layer_matrix(trials: pd.DataFrame) -> pd.DataFrame:
    """Long frame of per-layer choices: one row per (trial, family, layer) with value, strength and label.

    Generic over families: any family outside RUN_WIDE_FAMILIES whose choices are a mapping from
    layer name to a choice is read; a choice of unknown shape keeps its label and gets no number.
    Rows keep the order layers first appear in, which is the order the space listed them.
    """
    rows = []
    shares_column = trials["exit_shares"] if "exit_shares" in trials else [None] * len(trials)
    for trial, candidate, shares_json in zip(trials["trial"], trials["candidate"], shares_column):
        shares = exit_shares(shares_json)
        for family, per_layer in candidate_choices(candidate).items():
            if family in RUN_WIDE_FAMILIES or not isinstance(per_layer, dict):
                continue
            for layer, choice in per_layer.items():
                if family == "exits" and layer == "criterion":
                    continue  # one setting for the whole model, shown with the exits' summary
                choice = readable_choice(family, choice)
                value = choice_value(choice)
                label = choice_label(family, choice)
                if family == "exits" and layer in shares:
                    label += f" · {shares[layer]:.0%} out"
                rows.append({"trial": int(trial), "family": str(family), "layer": str(layer), "value": value,
                             "strength": compression_strength(family, value), "label": label})
    return pd.DataFrame(rows, columns=["trial", "family", "layer", "value", "strength", "label"])


def exit_shares(shares_json: str | None) -> dict[str, float]:
    """Exit name -> share of measured samples leaving there; {} for models without exits."""
    if not isinstance(shares_json, str):
        return {}
    try:
        shares = json.loads(shares_json)
    except ValueError:
        return {}
    return shares if isinstance(shares, dict) else {}


def knob_lines(candidate_json: str | None, shares_json: str | None = None) -> list[str]:
    """A readable summary of a candidate, one plain-text line per family (escape before drawing)."""
    lines = []
    for family, choices in candidate_choices(candidate_json).items():
        if not isinstance(choices, dict) or not choices:
            continue
        architecture = _architecture_line(family, choices, exit_shares(shares_json))
        if architecture is not None:
            lines.append(architecture)
            continue
        if family in RUN_WIDE_FAMILIES:
            settings = ", ".join(f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
                                 for key, value in choices.items())
            lines.append(f"{family}: {settings}")
            continue
        values = [v for v in (choice_value(readable_choice(family, c)) for c in choices.values()) if v is not None]
        touched = sum(1 for v in values if compression_strength(family, v))
        if family == "quant":
            bits = pd.Series(values).value_counts().sort_index()
            detail = ", ".join(f"{int(b)}b ×{n}" for b, n in bits.items())
        elif values:
            detail = f"mean {sum(values) / len(values):.2f}, max {max(values):.2f}"
        else:
            detail = "no numeric choices"
        lines.append(f"{family}: {touched}/{len(choices)} layers changed; {detail}")
    return lines


def _architecture_line(family: str, choices: dict[str, Any], shares: dict[str, float]) -> str | None:
    """Which layers a separable / low-rank / exit choice changed, by name (None for other families)."""
    if family == "separable":
        changed = [layer for layer, on in choices.items() if on is True]
        return f"separable: {len(changed)}/{len(choices)} convs" + (f" ({', '.join(changed)})" if changed else "")
    if family == "lowrank":
        changed = {layer: ratio for layer, ratio in choices.items() if isinstance(ratio, (int, float)) and ratio < 1}
        named = ", ".join(f"{layer} @{ratio:g}" for layer, ratio in changed.items())
        return f"lowrank: {len(changed)}/{len(choices)} layers" + (f" ({named})" if named else "")
    if family == "exits":
        live = {stage: t for stage, t in choices.items() if stage != "criterion" and t != "off"}
        if not live:
            return "exits: none"
        where = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
        exits = ", ".join(f"{stage} @{t:g}" if isinstance(t, (int, float)) else f"{stage} {t}" for stage, t in live.items())
        return f"exits: {exits} ({choices.get('criterion', 'max_prob')})" + (f"; samples leave at {where}" if where else "")
    return None


def trial_status(trials: pd.DataFrame, front: pd.DataFrame) -> pd.Series:
    """Each trial's place in the search: front, dominated, over budget, stopped early, failed, running."""
    on_front = set(front["trial"])

    def status(row) -> str:
        if row.state != "complete":
            return "failed" if row.state == "fail" else str(row.state)
        if isinstance(row.stopped_early, str):
            return "stopped early"
        if not row.feasible:
            return "over budget"
        return "front" if row.trial in on_front else "dominated"

    return pd.Series([status(row) for row in trials.itertuples()], index=trials.index, dtype=object)
