"""Training device, bf16 autocast, and GPU sharing with latency measurement, as far as a CPU shows them.

The shared/exclusive protocol that keeps `--jobs N` trainers off the GPU while one of them
measures is plain file locking, so it is tested here across real processes; on a GPU,
`gpu_work` wraps every training step and evaluation batch in it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from slimsearch.errors import ConfigError
from slimsearch.evaluators.compute import autocast_dtype, resolve_device
from slimsearch.evaluators.latency import gpu_work, measurement_lock, shared_lock
from slimsearch.tasks.models import ResidualCNN
from slimsearch.techniques.quantization import apply as quantize

HOLD = textwrap.dedent("""
    import os, sys, time
    from slimsearch.evaluators.latency import measurement_lock, shared_lock
    kind, hold = sys.argv[1], sys.argv[2]  # hold: seconds, or a file whose appearance ends the hold
    print("waiting", time.time(), flush=True)
    with (measurement_lock() if kind == "measure" else shared_lock()):
        print("held", time.time(), flush=True)
        if os.sep in hold:
            while not os.path.exists(hold):
                time.sleep(0.02)
        else:
            time.sleep(float(hold))
    print("released", time.time(), flush=True)
""")


@pytest.fixture(autouse=True)
def private_lock_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMSEARCH_LATENCY_LOCK", str(tmp_path / "latency.lock"))


def _start(kind: str, hold) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, kind, str(hold)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("waiting")
    return process


def _hold(kind: str, hold) -> subprocess.Popen:
    process = _start(kind, hold)
    line = process.stdout.readline()
    assert line.startswith("held"), line
    return process


def test_gpu_work_waits_while_another_process_measures():
    measuring = _hold("measure", 1.0)
    started = time.time()
    with shared_lock():
        waited = time.time() - started
    measuring.wait(timeout=30)
    assert waited > 0.5


def test_many_trainers_share_but_a_measurement_waits_for_them_and_then_goes_first(tmp_path):
    release = tmp_path / "release-trainer"
    trainer = _hold("shared", release)
    with shared_lock():  # a second trainer: no wait behind the first
        pass
    measurer = _start("measure", 1.0)
    time.sleep(0.5)  # the measurement is now waiting for the trainer, holding the gate
    entered = []

    def late_trainer() -> None:
        with shared_lock():
            entered.append(time.time())

    late = threading.Thread(target=late_trainer)
    late.start()  # a trainer arriving now must queue behind the measurement
    time.sleep(0.5)
    assert not entered
    release.touch()
    measured_at = float(measurer.stdout.readline().split()[1])
    late.join(timeout=30)
    trainer.wait(timeout=30)
    measurer.wait(timeout=30)
    assert entered and entered[0] > measured_at + 0.8  # it waited for the whole measurement


def test_gpu_work_is_free_off_cuda_and_inside_ones_own_measurement():
    measuring = _hold("measure", 1.0)
    started = time.time()
    with gpu_work("cpu"):  # CPU training runs beside measurements, as it always did
        pass
    assert time.time() - started < 0.5
    measuring.wait(timeout=30)
    with measurement_lock(), gpu_work("cuda"):  # would wait for itself if it took the lock
        pass


def test_training_device_auto_follows_the_machine_and_cuda_is_refused_without_a_gpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="finetune.device='cuda', but torch sees no CUDA GPU.*allowed here"):
            resolve_device("cuda")


def test_bf16_autocast_only_on_cuda_and_never_for_quantized_layers():
    model = ResidualCNN(in_channels=1, num_classes=10, widths=(8, 16))
    assert autocast_dtype(model, "cuda", True) is torch.bfloat16
    assert autocast_dtype(model, "cuda", False) is None
    assert autocast_dtype(model, "cpu", True) is None
    assert autocast_dtype(quantize(model, {"stem.0": "8-uniform"}), "cuda", True) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fine_tune_runs_on_the_gpu_with_autocast_and_leaves_the_model_there():
    from torch.utils.data import TensorDataset

    from slimsearch.evaluators.accuracy import accuracy
    from slimsearch.evaluators.train import fit

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(256) % 2
    inputs = torch.randn(256, 1, 24, 24, generator=generator) + (labels * 2 - 1).float()[:, None, None, None]
    model = ResidualCNN(in_channels=1, num_classes=2, widths=(8, 16))
    fit(model, TensorDataset(inputs, labels), epochs=3, lr=5e-3, device="cuda", autocast=True)
    assert next(model.parameters()).device.type == "cuda"
    assert accuracy(model, TensorDataset(inputs, labels), device="cuda") > 0.8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_evaluated_on_the_gpu_trains_afterwards():
    """Evaluating moves a CPU model to the GPU and back; the moved parameters must stay ordinary
    tensors (not inference tensors), or the teacher a search evaluated first can never be fine-tuned."""
    from torch.utils.data import TensorDataset

    from slimsearch.evaluators.train import fit, predict_logits

    inputs, labels = torch.randn(64, 1, 24, 24), torch.arange(64) % 2
    model = ResidualCNN(in_channels=1, num_classes=2, widths=(8, 16))
    predict_logits(model, inputs, device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    assert not any(p.is_inference() for p in model.parameters())
    fit(model, TensorDataset(inputs, labels), epochs=1, lr=1e-3, device="cuda")
