"""The per-trial time limit and the heartbeat settings: parsing, validation, the timer itself, worker errors."""

import signal
import time

import optuna
import torch
import pytest

from slimsearch.config import SearchConfig
from slimsearch.errors import ConfigError
from slimsearch.search.faults import TrialTimeoutError, time_limit
from slimsearch.search.storage import DIRECTIONS
from tests.conftest import slimsearch_cli


@pytest.mark.parametrize("value, seconds", [(90, 90.0), (2.5, 2.5), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0),
                                            ("45", 45.0)])
def test_trial_timeout_accepts_seconds_or_a_duration(value, seconds):
    config = SearchConfig.from_mapping({"faults": {"trial_timeout": value}})
    assert config.faults.trial_timeout == seconds
    assert SearchConfig.from_mapping(config.to_dict()).faults.trial_timeout == seconds  # survives the study attrs


@pytest.mark.parametrize("value", ["soon", 0, -5, "0s", "10 days", True, "inf"])
def test_a_bad_trial_timeout_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=r"faults\.trial_timeout must be a positive duration .* but got "
                                          rf"trial_timeout={value!r}"):
        SearchConfig.from_mapping({"faults": {"trial_timeout": value}})


def test_grace_period_must_outlast_the_heartbeat():
    with pytest.raises(ConfigError, match="grace_period=10, heartbeat_interval=10"):
        SearchConfig.from_mapping({"faults": {"heartbeat_interval": 10, "grace_period": 10}})
    with pytest.raises(ConfigError, match=r"faults\.heartbeat_interval must be an integer > 0, but got "
                                          r"heartbeat_interval=0\.5"):
        SearchConfig.from_mapping({"faults": {"heartbeat_interval": 0.5}})


def test_the_time_limit_interrupts_a_blocked_trial_and_gives_back_an_outer_timer():
    signal.setitimer(signal.ITIMER_REAL, 100.0)  # someone else's timer, as pytest-timeout sets one
    try:
        start = time.monotonic()
        with pytest.raises(TrialTimeoutError, match="time limit of 0.2s"):
            with time_limit(0.2):
                time.sleep(30)
        assert time.monotonic() - start < 30
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 100.0
        with time_limit(None):  # no limit: nothing armed, nothing raised
            time.sleep(0.01)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_cli_refuses_a_bad_trial_timeout(tmp_path):
    result = slimsearch_cli("run", "--trial-timeout", "soon", "--runs-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: faults.trial_timeout must be a positive duration")


def test_worker_needs_a_shared_study(tmp_path):
    no_run = slimsearch_cli("worker", str(tmp_path / "runs" / "nowhere"))
    assert no_run.returncode == 2
    assert "has no run.json, so the study's storage is unknown; give --storage" in no_run.stderr

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="other", storage=storage, directions=list(DIRECTIONS))
    unknown = slimsearch_cli("worker", str(tmp_path / "runs" / "tiny"), "--storage", storage)
    assert unknown.returncode == 2
    assert "no study named 'tiny'" in unknown.stderr and "(it holds: other)" in unknown.stderr

    optuna.create_study(study_name="tiny", storage=storage, directions=list(DIRECTIONS))
    foreign = slimsearch_cli("worker", str(tmp_path / "runs" / "tiny"), "--storage", storage)
    assert foreign.returncode == 2
    assert "holds no slimsearch settings" in foreign.stderr

    own = tmp_path / "runs" / "local"
    own.mkdir(parents=True)
    (own / "run.json").write_text('{"storage": "sqlite:///%s", "study_name": "local", "config": {}}'
                                  % (own / "study.db").resolve())
    local = slimsearch_cli("worker", str(own))
    assert local.returncode == 2
    assert "keeps its study in its own SQLite file" in local.stderr and "--jobs" in local.stderr


def test_a_measurement_cut_short_by_the_time_limit_leaves_a_working_measurer(tmp_path, monkeypatch):
    from slimsearch.evaluators.deploy import export_onnx
    from slimsearch.evaluators.latency import LatencySettings
    from slimsearch.evaluators.latency_worker import IsolatedMeasurer
    from slimsearch.tasks.models import ResidualCNN

    monkeypatch.setenv("SLIMSEARCH_LATENCY_LOCK", str(tmp_path / "latency.lock"))
    example = torch.randn(1, 1, 24, 24)
    small = export_onnx(ResidualCNN(in_channels=1, num_classes=10, widths=(8,)), example, tmp_path / "small.onnx")
    big = export_onnx(ResidualCNN(in_channels=1, num_classes=10, widths=(256, 256)), example, tmp_path / "big.onnx")
    measurer = IsolatedMeasurer(small, example, LatencySettings(warmup=2, repeats=400, rounds=4))
    try:
        first = measurer._process.pid
        with pytest.raises(TrialTimeoutError):
            with time_limit(0.2):
                measurer.measure_pair(big)
        # The interrupted reply must not be read as the answer to the next request: a fresh process answers.
        paired = measurer.measure_pair(small)
        # Student and teacher are the same small file here; the stale reply would be the big model's.
        assert paired.student.median_ms < 3 * paired.teacher.median_ms
        assert measurer._process.pid != first
    finally:
        measurer.close()
