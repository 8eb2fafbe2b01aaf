"""Front models re-evaluated on the full validation and test splits, after a search scored on a subset.

With `val_samples` set, every trial is scored on the same seeded subset of the validation split
(cheap enough to run per trial on real data), and its test accuracy is not computed. When the
search ends, each model on the front by those figures is rebuilt from its stored weights and
evaluated on the whole validation split and the whole test split. Both figures are kept: the
trial's objective stays the subset accuracy the search compared candidates by, and the full
figures are stored on the study (a finished trial's own attributes cannot change), where the
front, the report and export read them (reports/data.py).
"""

from __future__ import annotations

from typing import Callable

from slimsearch.reports.data import full_evaluations, search_front_trials
from slimsearch.search.attrs import FULL_EVALUATION_ATTR


def reevaluate_front(study, context, report: Callable[[str], None]) -> int:
    """Evaluate the search front's models that lack full figures; returns how many were evaluated."""
    task = context.task
    if not task.val_is_subset:
        return 0
    done = full_evaluations(study)
    pending = [trial for trial in search_front_trials(study) if trial.number not in done]
    if not pending:
        return 0
    report(f"Re-evaluating {len(pending)} front model(s) on the full validation ({len(task.val)}) and test "
           f"({len(task.test)}) splits (trials were scored on {len(task.search_val)} validation samples).")
    evaluated = 0
    for trial in pending:
        figures = _evaluate(trial, context)
        if figures is None:
            continue
        done[trial.number] = figures
        # Written after each model, so an interrupted re-evaluation keeps what it finished.
        study.set_user_attr(FULL_EVALUATION_ATTR, {str(number): values for number, values in sorted(done.items())})
        evaluated += 1
    return evaluated


def _evaluate(trial, context) -> dict[str, float] | None:
    """The trial's fine-tuned student on the full splits; None when its weights are not on this machine."""
    import tempfile
    from pathlib import Path

    from optuna.artifacts import download_artifact

    from slimsearch.evaluators.accuracy import accuracy
    from slimsearch.evaluators.deployed_accuracy import deployed_accuracy
    from slimsearch.search.storage import artifact_store
    from slimsearch.search.trial import WEIGHTS_ATTR, latency_settings, load_student
    from slimsearch.spaces import Candidate

    task, config = context.task, context.config
    splits = {"val": task.val, "test": task.test}
    with tempfile.TemporaryDirectory(prefix="slimsearch-reevaluate-") as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            download_artifact(artifact_store=artifact_store(context.run_dir), file_path=str(path),
                              artifact_id=trial.user_attrs[WEIGHTS_ATTR])
        except Exception:  # a worker on another machine keeps its own artifacts (README: workers)
            return None
        student = load_student(Candidate.from_dict(trial.user_attrs["candidate"]), task, config, path)
        # A quantized or early-exit model's figures are its deployed form's, as in the trial itself.
        deployed = deployed_accuracy(student, task, latency_settings(config), Path(tmp), splits)
    if deployed is None:
        deployed = {name: accuracy(student, split, workers=task.loader_workers) for name, split in splits.items()}
    return {f"{name}_accuracy": value for name, value in deployed.items()}
