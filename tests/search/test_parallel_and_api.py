"""The Python API mirrors the CLI; --jobs runs trials in parallel processes on one study."""

import slimsearch


def test_python_api_with_two_parallel_jobs(tiny_settings):
    result = slimsearch.search(**{**tiny_settings, "jobs": 2})
    trials = result.trials
    assert (trials["state"] == "complete").sum() >= 4
    assert trials["trial"].is_unique
    reopened = slimsearch.load(result.run_dir)
    assert reopened.front["trial"].tolist() == result.front["trial"].tolist()
    assert reopened.config.jobs == 2 and reopened.teacher["latency_ms"] > 0
