"""Latency is measured on the target runtime, orders models by compute, and never overlaps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from slimsearch.errors import ConfigError
from slimsearch.evaluators.latency import (
    LatencySettings,
    make_runner,
    measure,
    measure_pair,
    measurement_lock,
)
from slimsearch.tasks.models import ResidualCNN

EXAMPLE = torch.randn(1, 1, 24, 24)
QUICK = {"warmup": 2, "repeats": 12, "rounds": 3}


def cnn(widths: tuple[int, ...]) -> torch.nn.Module:
    return ResidualCNN(in_channels=1, num_classes=10, widths=widths)


@pytest.fixture(autouse=True)
def private_lock_file(tmp_path, monkeypatch):
    # Tests must not wait on (or block) real measurements running elsewhere on this machine.
    monkeypatch.setenv("SLIMSEARCH_LATENCY_LOCK", str(tmp_path / "latency.lock"))


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"runtime": "tvm"}, "runtime='tvm'"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"threads": 0}, "threads=0"),
        ({"repeats": 0}, "repeats=0"),
        ({"warmup": -1}, "warmup=-1"),
    ],
)
def test_settings_reject_bad_values_and_name_them(kwargs, bad):
    with pytest.raises(ConfigError, match=bad):
        LatencySettings(**kwargs)


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_measure_summarises_every_repeat(runtime):
    settings = LatencySettings(runtime=runtime, repeats=13, warmup=2, rounds=3)
    result = measure(make_runner(cnn((8, 16)), EXAMPLE, settings), settings)
    assert result.samples == 13
    assert result.median_ms > 0
    assert result.iqr_ms >= 0
    assert result.p90_ms >= result.median_ms
    assert result.to_dict()["runtime"] == runtime


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_pair_orders_models_by_compute(runtime):
    # ~60x apart in compute; measured ~20x (ORT) and ~9x (eager) on a 2-core box, so 2x cannot flake.
    settings = LatencySettings(runtime=runtime, **QUICK)
    small = make_runner(cnn((8, 16, 32)), EXAMPLE, settings)
    big = make_runner(cnn((64, 128, 256)), EXAMPLE, settings)
    pair = measure_pair(small, big, settings)
    assert pair.student.samples == pair.teacher.samples == QUICK["repeats"]
    assert pair.speedup > 2, pair


def test_pair_alternates_which_model_goes_first():
    calls = []
    settings = LatencySettings(warmup=0, repeats=4, rounds=2)
    measure_pair(lambda: calls.append("s"), lambda: calls.append("t"), settings)
    assert "".join(calls) == "ttss" + "sstt"


def test_torch_runtime_restores_thread_count():
    before = torch.get_num_threads()
    settings = LatencySettings(runtime="torch", threads=1, **QUICK)
    runner = make_runner(cnn((8, 16)), EXAMPLE, settings)
    seen = []
    measure(lambda: (seen.append(torch.get_num_threads()), runner()), settings)
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_runner_uses_the_configured_batch_size(runtime):
    shapes = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn((8, 16))

        def forward(self, x):
            if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
                shapes.append(tuple(x.shape))
            return self.net(x)

    settings = LatencySettings(runtime=runtime, batch_size=4, warmup=0, repeats=1, rounds=1)
    runner = make_runner(Recorder(), EXAMPLE, settings)
    if runtime == "torch":
        runner()
        assert shapes == [(4, 1, 24, 24)]
    else:
        (logits,) = runner()
        assert logits.shape == (4, 10)


def test_measurements_in_two_threads_never_overlap():
    intervals: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}

    def recording_runner(name):
        def run():
            start = time.perf_counter()
            time.sleep(0.002)
            intervals[name].append((start, time.perf_counter()))
        return run

    settings = LatencySettings(warmup=1, repeats=10, rounds=2)
    threads = [threading.Thread(target=measure, args=(recording_runner(n), settings)) for n in intervals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans = sorted((calls[0][0], calls[-1][1]) for calls in intervals.values())
    assert spans[0][1] <= spans[1][0], spans


def test_lock_is_reentrant_within_a_thread():
    settings = LatencySettings(warmup=0, repeats=2, rounds=1)
    with measurement_lock():
        assert measure(lambda: None, settings).samples == 2


def test_measurement_waits_for_another_process_holding_the_lock():
    child_code = textwrap.dedent(
        """
        import sys, time
        from slimsearch.evaluators.latency import measurement_lock
        with measurement_lock():
            print("locked", flush=True)
            time.sleep(1.0)
            print(time.time(), flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.PIPE, text=True,
                             cwd=os.getcwd(), env=os.environ.copy())
    try:
        assert child.stdout.readline().strip() == "locked"
        starts = []
        measure(lambda: starts.append(time.time()), LatencySettings(warmup=0, repeats=3, rounds=1))
        released_at = float(child.stdout.readline())
    finally:
        child.wait(timeout=30)
    assert child.returncode == 0
    assert starts[0] >= released_at


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pair_on_cuda_with_torch_runtime():
    settings = LatencySettings(runtime="torch", device="cuda", **QUICK)
    small = make_runner(cnn((8, 16, 32)), EXAMPLE, settings)
    big = make_runner(cnn((64, 128, 256)), EXAMPLE, settings)
    pair = measure_pair(small, big, settings)
    assert pair.student.device == "cuda"
    assert pair.student.samples == QUICK["repeats"]
    assert pair.student.median_ms > 0 and pair.teacher.median_ms > 0
    assert pair.teacher.p90_ms >= pair.teacher.median_ms
