"""Deployable artifacts of a chosen trial, re-checked against what the search reported.

Nothing is retrained: the student is rebuilt from the teacher and the trial's candidate, and
its fine-tuned weights come from the trial's stored artifact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimsearch.errors import ExportError

# How far the exported model may be from the trial's figures before export refuses it.
MAX_LOGIT_DIFFERENCE = 1e-3
MAX_ACCURACY_DIFFERENCE = 0.005  # 0.5 points


@dataclass
class ExportResult:
    trial: int
    out_dir: Path
    files: dict[str, Path]
    verification: dict[str, Any] = field(default_factory=dict)


def _choose_trial(result, trial: int | None):
    from slimsearch.reports.data import recommended

    study_trials = {t.number: t for t in result.study.get_trials(deepcopy=False)}
    if trial is None:
        best = recommended(result.front)
        if best is None:
            raise ExportError(f"no feasible trial to export in {result.run_dir}: the front is empty; "
                              f"pass --trial N to export a specific completed trial")
        trial = int(best["trial"])
    exportable = sorted(n for n, t in study_trials.items() if "weights_artifact" in t.user_attrs)
    chosen = study_trials.get(trial)
    listed = ", ".join(map(str, exportable)) or "none yet"
    if chosen is None:
        raise ExportError(f"trial {trial} does not exist in {result.run_dir}; exportable trials: {listed}")
    if "weights_artifact" not in chosen.user_attrs:
        why = (chosen.user_attrs.get("stopped_early") or chosen.user_attrs.get("fail_reason")
               or f"it is {chosen.state.name.lower()}")
        raise ExportError(f"trial {trial} cannot be exported ({why}); exportable trials: {listed}")
    return chosen


def export_trial(result, *, trial: int | None = None, out: str | Path | None = None) -> ExportResult:
    """Write model.onnx, weights.pt and candidate.json for a trial, then verify them."""
    from optuna.artifacts import download_artifact

    from slimsearch.evaluators.accuracy import accuracy_from_logits
    from slimsearch.evaluators.deploy import export_onnx, onnx_predict, onnx_session
    from slimsearch.evaluators.train import predict_logits
    from slimsearch.search.storage import artifact_store
    from slimsearch.search.trial import load_student
    from slimsearch.spaces import Candidate
    from slimsearch.tasks import create_task

    chosen = _choose_trial(result, trial)
    config = result.config
    out_dir = Path(out) if out else result.run_dir / "export" / f"trial-{chosen.number}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot write to export folder {str(out_dir)!r}: {error.strerror}") from None
    files = {"onnx": out_dir / "model.onnx", "weights": out_dir / "weights.pt", "candidate": out_dir / "candidate.json"}

    weights_tmp = out_dir / f".weights.pt.tmp-{os.getpid()}"
    weights_tmp.unlink(missing_ok=True)
    download_artifact(artifact_store=artifact_store(result.run_dir), file_path=str(weights_tmp),
                      artifact_id=chosen.user_attrs["weights_artifact"])
    os.replace(weights_tmp, files["weights"])
    candidate = Candidate.from_dict(chosen.user_attrs["candidate"])
    files["candidate"].write_text(candidate.to_json(indent=2) + "\n")

    task = create_task(config.task, seed=config.seed)
    student = load_student(candidate, task, config, files["weights"])
    export_onnx(student, task.example_input, files["onnx"])

    # Verify: reload each artifact and compare with the fine-tuned model and the trial's figures.
    inputs, labels = task.test.tensors
    reloaded = load_student(Candidate.from_json(files["candidate"].read_text()), task, config, files["weights"])
    torch_logits = predict_logits(reloaded, inputs)
    onnx_logits = onnx_predict(onnx_session(files["onnx"], threads=config.target.threads), inputs)
    difference = float((torch_logits - onnx_logits).abs().max())
    onnx_accuracy = accuracy_from_logits(onnx_logits, labels)
    reported = chosen.user_attrs.get("test_accuracy")
    verification = {
        "max_logit_difference": difference,
        "argmax_agreement": float((torch_logits.argmax(1) == onnx_logits.argmax(1)).float().mean()),
        "onnx_test_accuracy": onnx_accuracy,
        "reported_test_accuracy": reported,
        "tolerances": {"max_logit_difference": MAX_LOGIT_DIFFERENCE, "accuracy": MAX_ACCURACY_DIFFERENCE},
    }
    (out_dir / "export.json").write_text(json.dumps({"trial": chosen.number, "verification": verification}, indent=2))
    if difference > MAX_LOGIT_DIFFERENCE:
        raise ExportError(f"exported ONNX model differs from the fine-tuned model: max logit difference "
                          f"{difference:.2e} > {MAX_LOGIT_DIFFERENCE:.0e} (files in {out_dir})")
    if reported is not None and abs(onnx_accuracy - reported) > MAX_ACCURACY_DIFFERENCE:
        raise ExportError(f"exported model's test accuracy {onnx_accuracy:.2%} differs from the trial's reported "
                          f"{reported:.2%} by more than {MAX_ACCURACY_DIFFERENCE:.1%} (files in {out_dir})")
    return ExportResult(chosen.number, out_dir, files, verification)
