"""A failing trial is recorded with its reason, and the search goes on to the requested count."""

import slimsearch


def test_failed_trials_keep_their_reason_and_the_search_completes(tiny_settings, monkeypatch):
    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO))
    # Optuna's random sampler over every knob: its seed-5 draws are what this test relies on.
    settings = {**tiny_settings, "task": "tests.search.fault_tasks:fragile", "sampler": "random", "seed": 5,
                "proposers": ["sampler"], "parametrisation": "layer", "warm_start": False,
                "trials": 5, "latency_budget": "2x", "space": {"families": ["prune", "distill"]}}
    result = slimsearch.search(**settings)
    trials = result.trials
    failed = trials[trials["state"] == "fail"]
    assert (trials["state"] == "complete").sum() == 5
    assert len(failed) >= 1, "seed 5 samples prune ratios that leave 8 channels"
    assert failed["fail_reason"].str.contains("needs >= 16 channels").all()
    assert set(result.front["trial"]).isdisjoint(failed["trial"])
