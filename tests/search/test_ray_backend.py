"""The Ray Tune backend on a real two-node Ray cluster started on this machine (127.0.0.1).

Each node is a `ray start --block` process: terminating it stops exactly the Ray processes it
started (Ray ties them to it), so teardown never touches another Ray on the machine, as a
blanket `ray stop` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from slimsearch.config import SearchConfig
from slimsearch.errors import ConfigError
from slimsearch.search import storage as st
from tests.conftest import REPO, slimsearch_cli, write_toml

RAY = Path(sys.executable).with_name("ray")
RESOURCE = "slimsearch_target_cpu"
RECORDED_ATTRS = {"candidate", "latency", "teacher_latency_ms", "speedup", "feasible", "violation", "stopped_early",
                  "seconds", "params_count", "test_accuracy", "weights_artifact", "ray_node"}


@dataclass
class Cluster:
    address: str
    logs: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not listen on port {port} within {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_for_nodes(address: str, count: int, timeout: float = 120) -> None:
    import ray

    ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    try:
        deadline = time.monotonic() + timeout
        while sum(1 for node in ray.nodes() if node["Alive"]) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes within {timeout} s")
            time.sleep(0.5)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and one worker node, 1 CPU each, both offering the CPU target's resource.

    The cluster takes a token only this module knows (Ray's token authentication): nothing
    else on the network can run code on it, and a token a local `ray.init()` left in
    ~/.ray/auth_token cannot lock the test out.
    """
    temp = Path(tempfile.mkdtemp(prefix="ssray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    env = {**os.environ, **auth,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    node = ["--num-cpus=1", "--object-store-memory=80000000", f"--resources={json.dumps({RESOURCE: 1})}",
            "--disable-usage-stats", "--block"]
    processes = []
    patch = pytest.MonkeyPatch()
    for key, value in auth.items():  # the CLI runs (and the check below) join with the same token
        patch.setenv(key, value)
    try:
        head_log = temp / "head.log"
        processes.append(subprocess.Popen(
            [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
             f"--temp-dir={temp}", *node], env=env, stdout=head_log.open("w"), stderr=subprocess.STDOUT))
        _wait_for_port(port, processes[0], head_log)
        address = f"127.0.0.1:{port}"
        processes.append(subprocess.Popen(
            [str(RAY), "start", f"--address={address}", "--node-ip-address=127.0.0.1", *node], env=env,
            stdout=(temp / "worker.log").open("w"), stderr=subprocess.STDOUT))
        _wait_for_nodes(address, 2)
        yield Cluster(address=address, logs=temp)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        patch.undo()
        shutil.rmtree(temp, ignore_errors=True)


def _pareto_numbers(trials) -> set[int]:
    """The front by definition: feasible fine-tuned trials no other one beats on all three objectives."""
    points = {t.number: (-t.values[0], t.values[1], t.values[2]) for t in trials
              if t.user_attrs["feasible"] and not t.user_attrs["stopped_early"]}
    return {n for n, p in points.items()
            if not any(q != p and all(a <= b for a, b in zip(q, p)) for q in points.values())}


@pytest.mark.ray
def test_search_runs_on_a_two_node_ray_cluster_and_reads_like_any_run(ray_cluster, tiny_settings, tmp_path):
    config = write_toml(tmp_path / "search.toml", {**tiny_settings, "trials": 3, "backend": "ray"})
    started = time.monotonic()
    run = slimsearch_cli("run", str(config), "--address", ray_cluster.address)
    assert run.returncode == 0, run.stderr
    print(f"ray search of 3 trials: {time.monotonic() - started:.1f} s")
    run_dir = tmp_path / "runs" / "tiny"

    from optuna.trial import TrialState

    study = st.load_study(run_dir)
    completed = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(completed) == 3
    assert study.user_attrs["teacher"]["latency_ms"] > 0  # the preflight, measured on a node
    for trial in completed:
        assert RECORDED_ATTRS <= trial.user_attrs.keys()
        assert trial.system_attrs["constraints:latency"] == pytest.approx(trial.user_attrs["violation"])
        assert (run_dir / "artifacts" / trial.user_attrs["weights_artifact"]).exists()
    # Two trials ran at once and each node has one CPU: both nodes ran (and timed) trials.
    assert len({trial.user_attrs["ray_node"]["node_id"] for trial in completed}) == 2

    front = slimsearch_cli("front", str(run_dir), "--json")
    assert front.returncode == 0, front.stderr
    records = json.loads(front.stdout)
    assert records, "a 0.7x budget on digits leaves feasible trials"
    assert {r["trial"] for r in records} == _pareto_numbers(completed)
    by_number = {trial.number: trial for trial in completed}
    for record in records:
        trial = by_number[record["trial"]]
        assert (record["accuracy"], record["latency_ms"], record["size_bytes"]) == pytest.approx(trial.values)
        assert record["candidate"] == trial.user_attrs["candidate"]

    # The same command, asking for one more trial, resumes the study and keeps what was done.
    again = slimsearch_cli("run", str(config), "--address", ray_cluster.address, "--trials", "4")
    assert again.returncode == 0, again.stderr
    assert "Resuming study 'tiny'" in again.stderr and "3 of 4 trials already done" in again.stderr
    resumed = st.load_study(run_dir).get_trials(states=(TrialState.COMPLETE,))
    assert len(resumed) == 4
    assert {t.number: t.values for t in resumed if t.number in by_number} == {n: t.values for n, t in by_number.items()}


@pytest.mark.ray
def test_a_trial_that_raises_on_a_node_is_failed_with_its_reason(ray_cluster, tiny_settings, tmp_path):
    settings = {**tiny_settings, "task": "tests.search.fault_tasks:picky", "sampler": "random", "seed": 5,
                "trials": 2, "latency_budget": "2x", "space": {"families": ["prune", "distill"]}, "backend": "ray",
                "warm_start": False, "proposers": ["sampler"], "parametrisation": "layer"}  # the seed-5 random draws (48 channels first) are what this test relies on
    run = slimsearch_cli("run", str(write_toml(tmp_path / "search.toml", settings)), "--address", ray_cluster.address)
    assert run.returncode == 0, run.stderr
    from slimsearch.search.result import Result

    trials = Result(tmp_path / "runs" / "tiny").trials
    failed = trials[trials["state"] == "fail"]
    assert (trials["state"] == "complete").sum() == 2
    assert len(failed) >= 1, "seed 5 samples prune ratios that leave 40 to 56 channels"
    assert failed["fail_reason"].str.contains("NoMiddleWidths has no path for").all()
    assert set(Result(tmp_path / "runs" / "tiny").front["trial"]).isdisjoint(failed["trial"])


@pytest.mark.ray
def test_a_cluster_without_nodes_of_the_target_kind_is_refused(ray_cluster, tiny_settings, tmp_path):
    config = write_toml(tmp_path / "search.toml", {**tiny_settings, "backend": "ray", "target": {"device": "cuda"}})
    run = slimsearch_cli("run", str(config), "--address", ray_cluster.address)
    assert run.returncode == 2, run.stderr
    assert "slimsearch_target_cuda" in run.stderr and "ray start" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("settings, fragment", [
    ({"backend": "rey"}, "backend must be one of 'optuna', 'ray', but got backend='rey'"),
    ({"backend": "ray", "jobs": 2}, "jobs=2"),
    ({"ray": {"cpus_per_trial": 0}}, "ray.cpus_per_trial must be a finite number > 0, but got cpus_per_trial=0"),
    ({"ray": {"gpus_per_trial": -1}}, "gpus_per_trial=-1"),
    ({"ray": {"address": "head node"}}, "address='head node'"),
    ({"ray": {"target_resource": "CPU"}}, "target_resource='CPU'"),
    ({"ray": {"workers": 3}}, "unknown key 'ray.workers'"),
])
def test_bad_ray_settings_are_refused(settings, fragment):
    with pytest.raises(ConfigError, match=None) as error:
        SearchConfig.from_mapping(settings)
    assert fragment in str(error.value)


def test_address_without_the_ray_backend_is_refused(tmp_path):
    run = slimsearch_cli("run", "--runs-dir", str(tmp_path), "--address", "127.0.0.1:6379")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--address '127.0.0.1:6379'" in run.stderr and "--backend ray" in run.stderr


def test_unreachable_cluster_address_fails_fast_with_one_line(tiny_settings, tmp_path):
    config = write_toml(tmp_path / "search.toml", {**tiny_settings, "backend": "ray"})
    run = slimsearch_cli("run", str(config), "--address", f"127.0.0.1:{_free_port()}")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "cannot connect to the Ray cluster at '127.0.0.1:" in run.stderr
