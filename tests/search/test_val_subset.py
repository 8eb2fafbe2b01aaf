"""`val_samples`: trials scored on a seeded validation subset, front models re-evaluated on the full splits."""

from __future__ import annotations

from optuna.artifacts import download_artifact

import slimsearch
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.evaluators.deployed_accuracy import deployed_accuracy
from slimsearch.reports.data import full_evaluations
from slimsearch.search.storage import artifact_store
from slimsearch.search.trial import WEIGHTS_ATTR, latency_settings, load_student
from slimsearch.spaces import Candidate
from slimsearch.tasks import task_from_config

GOOD = "tests.tasks.factories:good"  # the tiny 8x8 digits task: trials take a second or two


def test_front_models_are_re_evaluated_on_the_full_splits(tmp_path):
    result = slimsearch.search(task=GOOD, latency_budget="2x", trials=4, name="subset", runs_dir=str(tmp_path),
                               val_samples=40, finetune={"steps": 20, "batch_size": 32},
                               latency={"warmup": 1, "repeats": 10, "rounds": 2})
    study = result.study
    full = full_evaluations(study)
    front = result.front
    assert not front.empty and set(front["trial"]) <= set(full)
    task = task_from_config(result.config)
    assert len(task.search_val) == 40 and len(task.val) > 300
    for row in front.itertuples():
        trial = study.trials[int(row.trial)]
        # Both figures are kept: the trial's objective is the subset's, the front shows the full split's.
        assert row.search_accuracy == trial.values[0]
        assert row.accuracy == full[int(row.trial)]["val_accuracy"]
        assert row.test_accuracy == full[int(row.trial)]["test_accuracy"]
        assert "test_accuracy" not in trial.user_attrs  # never computed per trial with a subset
    # The stored figure is the fine-tuned model's accuracy on the whole validation split.
    best = int(front.sort_values("accuracy").iloc[-1]["trial"])
    weights = tmp_path / "w.pt"
    download_artifact(artifact_store=artifact_store(result.run_dir), file_path=str(weights),
                      artifact_id=study.trials[best].user_attrs[WEIGHTS_ATTR])
    student = load_student(Candidate.from_dict(study.trials[best].user_attrs["candidate"]), task, result.config, weights)
    # (A quantized model's figure is its deployed form's: the int8 ONNX file ONNX Runtime runs.)
    deployed = deployed_accuracy(student, task, latency_settings(result.config), tmp_path, {"val": task.val})
    assert (deployed["val"] if deployed else accuracy(student, task.val)) == full[best]["val_accuracy"]
    teacher = result.teacher
    assert teacher["val_samples"] == 40 and "search_val_accuracy" in teacher
    # Resuming does not evaluate again what it already has.
    again = slimsearch.search(task=GOOD, latency_budget="2x", trials=4, name="subset", runs_dir=str(tmp_path),
                              val_samples=40, finetune={"steps": 20, "batch_size": 32},
                              latency={"warmup": 1, "repeats": 10, "rounds": 2})
    assert full_evaluations(again.study) == full
