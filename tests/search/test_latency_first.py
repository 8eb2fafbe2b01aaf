"""The latency-first rule: a candidate over budget is timed, then stopped before any fine-tuning."""

import time

import optuna

from slimsearch.config import SearchConfig
from slimsearch.search.trial import TrialContext, run_trial
from slimsearch.spaces import Space
from slimsearch.spaces.optuna_adapter import candidate_params
from slimsearch.tasks import create_task


def test_over_budget_candidate_stops_in_seconds_without_fine_tuning(tiny_settings, tmp_path):
    # The uncompressed candidate is the teacher itself: at 0.5x it is 100% over budget.
    config = SearchConfig.from_mapping({**tiny_settings, "latency_budget": "0.5x", "finetune": {"epochs": 50.0}})
    task = create_task(config.task)
    space = Space.discover(task.teacher, task.example_input, config.space)
    context = TrialContext.create(config, task, space, tmp_path)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial(candidate_params(space.default_candidate(), space))

    started = time.perf_counter()
    study.optimize(lambda trial: run_trial(trial, context), n_trials=1)
    elapsed = time.perf_counter() - started

    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["stopped_early"].startswith("latency-first")
    assert "finetune" not in trial.user_attrs["seconds"]
    assert trial.user_attrs["feasible"] is False and trial.constraints["latency"] > 0
    assert "weights_artifact" not in trial.user_attrs
    # 50 epochs of fine-tuning would take minutes; being stopped takes seconds.
    assert elapsed < 15, f"an over-budget trial took {elapsed:.1f} s"
    assert abs(trial.values[1] - trial.user_attrs["teacher_latency_ms"]) / trial.values[1] < 0.5
