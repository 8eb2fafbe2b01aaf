"""Ctrl-C: one line, exit code 130, no traceback; the interrupted trial is recorded with its reason
and its candidate runs again when the same command is run again."""

import os
import signal
import subprocess
import sys
import time

import optuna

from slimsearch.search.faults import INTERRUPT_REASON
from tests.conftest import write_toml

MESSAGE = "interrupted: completed trials are kept; run the same command again to resume"


def _trials(run_dir):
    try:
        return optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}").get_trials()
    except Exception:  # not created yet, or mid-write
        return []


def test_ctrl_c_says_one_line_and_the_interrupted_candidate_runs_on_resume(tiny_settings, tmp_path):
    settings = {**tiny_settings, "trials": 2, "finetune": {"epochs": 1.5}}
    command = [sys.executable, "-m", "slimsearch.cli", "run", str(write_toml(tmp_path / "search.toml", settings)), "--quiet"]
    run_dir = tmp_path / "runs" / "tiny"
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches the latency worker too.
    # SIGINT as a terminal gives it: a test run in the background (`make test &`) inherits it ignored.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not [t for t in _trials(run_dir) if t.state.name == "RUNNING" and "candidate" in t.user_attrs]:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=120)
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr and "failed" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == MESSAGE
    assert (run_dir / "space.json").is_file()  # the run folder keeps the probed space

    trials = _trials(run_dir)
    interrupted = [t for t in trials if t.state.name == "FAIL"]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["fail_reason"] == INTERRUPT_REASON
    queued = [t for t in trials if t.state.name == "WAITING" and t.user_attrs.get("retry_of") == interrupted[0].number]
    assert len(queued) == 1

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    retry = next(t for t in _trials(run_dir) if t.user_attrs.get("retry_of") == interrupted[0].number)
    assert retry.state.name == "COMPLETE" and retry.params == interrupted[0].params
