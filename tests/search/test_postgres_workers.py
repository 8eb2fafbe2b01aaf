"""Many processes on one PostgreSQL study: SIGKILL the driver, then a worker, mid-trial; nothing is lost.

PostgreSQL comes from Debian's packages through the project's own scripts, and runs as a
throwaway cluster on 127.0.0.1 for this module. Heartbeats are short here (1 s, 4 s grace), so
a dead process's trial is retried within seconds.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest

from tests.conftest import REPO, write_toml

pytestmark = pytest.mark.postgres

SCRIPTS = REPO / "scripts"


def _unavailable(message: str):
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the PostgreSQL tests)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    install = subprocess.run(["bash", str(SCRIPTS / "install-postgres.sh")], capture_output=True, text=True,
                             timeout=600)
    if install.returncode != 0:
        _unavailable(f"PostgreSQL could not be installed: {install.stderr.strip()[-500:]}")
    # Under /tmp, not pytest's private tmp_path: the server runs as the `postgres` user when we are root.
    data_dir = tempfile.mkdtemp(prefix="slimsearch-pg-")
    start = subprocess.run(["bash", str(SCRIPTS / "start-postgres.sh"), data_dir, str(_free_port())],
                           capture_output=True, text=True, timeout=120)
    if start.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop-postgres.sh"), data_dir, "--remove"], timeout=60)
        _unavailable(f"PostgreSQL could not be started: {start.stderr.strip()[-500:]}")
    try:
        yield start.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop-postgres.sh"), data_dir, "--remove"], timeout=60)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "slimsearch.cli", *args]


def _start(command: list[str], log) -> subprocess.Popen:
    # cwd=REPO so that the user task `tests.search.fault_tasks:...` imports in the subprocess. The
    # log is a file, not a pipe nobody reads while the process runs (a full pipe would block it).
    with open(log, "w") as stream:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stream, text=True)
    process.log = log
    return process


def _trials(storage) -> list:
    try:
        return optuna.load_study(study_name="tiny", storage=storage).get_trials()
    except KeyError:  # the study does not exist yet
        return []


def _kill_mid_trial(process: subprocess.Popen, storage, *, ready=lambda trials: True, deadline: float):
    """SIGKILL `process` while it runs a trial; returns the numbers of its unfinished trials.

    The process is frozen (SIGSTOP) before the study is read, so what the test sees is what the
    process holds when it dies; if it is between trials it is let go on and asked again.
    """
    worker_id = f"{socket.gethostname()}:{process.pid}"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.log.read_text()
        trials = _trials(storage)
        mine = [t for t in trials if t.state.name == "RUNNING" and t.params and t.user_attrs.get("worker") == worker_id]
        if mine and ready(trials):
            process.send_signal(signal.SIGSTOP)
            held = [t.number for t in _trials(storage)
                    if t.state.name == "RUNNING" and t.params and t.user_attrs.get("worker") == worker_id]
            if held:
                process.kill()
                process.wait(timeout=30)
                return held
            process.send_signal(signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError("the process never held a running trial")


def test_workers_share_a_postgres_study_and_lost_trials_are_retried(postgres_url, tiny_settings, tmp_path):
    url = postgres_url
    storage = optuna.storages.RDBStorage(url)  # one connection pool for all the polling below
    settings = {**tiny_settings, "task": "tests.search.fault_tasks:fragile", "trials": 6, "sampler": "random",
                "latency_budget": "5x", "storage": url, "finetune": {"epochs": 2.0},
                # The fragile model needs >= 16 of its 32 channels: stay within what it can run.
                "space": {"families": ["prune"], "max_prune_ratio": 0.5},
                "faults": {"heartbeat_interval": 1, "grace_period": 4}}
    config = write_toml(tmp_path / "search.toml", settings)
    run_dir = tmp_path / "runs" / "tiny"
    run_command = _cli("run", str(config), "--quiet")
    processes = []
    try:
        # 1. The driver creates the study; it is killed during its first trial.
        driver = _start(run_command, tmp_path / "driver.log")
        processes.append(driver)
        deadline = time.monotonic() + 300
        lost = _kill_mid_trial(driver, storage, deadline=deadline)

        # 2. Two workers join the study; one is killed mid-trial once the other is at work too.
        first, second = (_start(_cli("worker", str(run_dir), "--storage", url, "--quiet"), tmp_path / f"worker{i}.log")
                         for i in range(2))
        processes += [first, second]
        ids = {f"{socket.gethostname()}:{p.pid}" for p in (first, second)}

        def both_working(trials) -> bool:
            return {t.user_attrs.get("worker") for t in trials} >= ids

        victim, survivor = first, second
        lost += _kill_mid_trial(victim, storage, ready=both_working, deadline=deadline)
        kept = {t.number: t.values for t in _trials(storage) if t.state.name == "COMPLETE"}

        # 3. The survivor finishes the study, retrying both lost trials.
        assert survivor.wait(timeout=600) == 0, survivor.log.read_text()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    trials = _trials(storage)
    summary = "\n".join(f"{t.number} {t.state.name} {t.user_attrs.get('worker')} retry_of={t.user_attrs.get('retry_of')} "
                        f"{t.user_attrs.get('fail_reason')}" for t in trials)
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")], summary
    completed = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    assert len(completed) >= 6
    assert all(completed.get(number) == values for number, values in kept.items())
    by_number = {t.number: t for t in trials}
    for number in lost:
        assert by_number[number].state.name == "FAIL", summary
        assert by_number[number].user_attrs["fail_reason"].startswith("interrupted"), summary
        # Its candidate was queued again and re-evaluated (a retry killed in turn is retried too).
        retry = by_number[number]
        while retry.state.name != "COMPLETE":
            [retry] = [t for t in trials if t.user_attrs.get("retry_of") == retry.number]
        assert retry.number != number and retry.user_attrs["candidate"] == by_number[number].user_attrs["candidate"]

    # 4. The same command resumes: nothing left to do, every trial kept, the front printed.
    again = subprocess.run(run_command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "Resuming study 'tiny'" in again.stderr
    assert {t.number: t.values for t in _trials(storage) if t.state.name == "COMPLETE"} == completed
    front = subprocess.run(_cli("front", str(run_dir), "--json"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert front.returncode == 0, front.stderr
