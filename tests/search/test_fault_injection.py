"""One trial raises, one returns NaN, one hangs past its time limit: each fails alone, with its reason."""

import optuna
import pytest

import slimsearch
from slimsearch.search.storage import DIRECTIONS
from tests.conftest import REPO

pytestmark = pytest.mark.faults

# Prune ratios of the Saboteur's conv (64 channels, rounded to 8) and what each candidate does.
PLAN = [(0.0, "complete"),   # 64 channels
        (0.1, "raises"),     # 56
        (0.2, "nan"),        # 48
        (0.35, "hangs"),     # 40
        (0.5, "complete")]   # 32


def test_failing_trials_are_recorded_and_the_search_goes_on(tiny_settings, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    settings = {**tiny_settings, "task": "tests.search.fault_tasks:saboteur", "trials": 2, "latency_budget": "5x",
                "sampler": "random", "space": {"families": ["prune"]}, "finetune": {"epochs": 0.5},
                "faults": {"trial_timeout": "15s"}}
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    storage = f"sqlite:///{run_dir / 'study.db'}"
    # A user may create the study first to have chosen candidates evaluated; the search adopts it.
    study = optuna.create_study(study_name="tiny", storage=storage, directions=list(DIRECTIONS))
    for ratio, _ in PLAN:
        study.enqueue_trial({"prune:conv": ratio})

    result = slimsearch.search(**settings)

    trials = result.trials.set_index("trial")
    assert trials["state"].tolist() == ["complete", "fail", "fail", "fail", "complete"]
    reasons = trials["fail_reason"]
    assert "RuntimeError: Saboteur refuses to run with 56 channels" in reasons[1]
    assert "nan" in reasons[2].lower() and reasons[2].startswith("FloatingPointError")
    assert reasons[3].startswith("TrialTimeoutError") and "time limit of 15s" in reasons[3]
    assert trials.loc[[0, 4], "fail_reason"].isna().all()

    # The front is the Pareto front of the completed trials, as Optuna computes it on its own.
    reopened = optuna.load_study(study_name="tiny", storage=storage)
    assert sorted(result.front["trial"]) == sorted(t.number for t in reopened.best_trials)
    assert set(result.front["trial"]) <= {0, 4}
