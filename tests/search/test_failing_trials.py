"""A failing trial is recorded with its reason, and the search goes on to the requested count."""

import slimsearch


def test_failed_trials_keep_their_reason_and_the_search_completes(tiny_settings, monkeypatch):
    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO))
    # The model fails at middle widths, which the capability probe (extreme and 0.5) does not try.
    settings = {**tiny_settings, "task": "tests.search.fault_tasks:picky", "sampler": "random", "seed": 4,
                "proposers": ["sampler"], "parametrisation": "layer", "warm_start": False,
                "trials": 5, "latency_budget": "2x", "space": {"families": ["prune", "distill"]}}
    result = slimsearch.search(**settings)
    trials = result.trials
    failed = trials[trials["state"] == "fail"]
    assert (trials["state"] == "complete").sum() == 5
    assert len(failed) >= 1, "the warm start's pruning at 0.1 and seed 4's draws leave 40 to 56 channels"
    assert failed["fail_reason"].str.contains("NoMiddleWidths has no path for").all()
    assert set(result.front["trial"]).isdisjoint(failed["trial"])
