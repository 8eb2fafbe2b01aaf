"""Splits of any map-style Dataset: streamed fine-tuning and evaluation, steps, teacher logits on disk."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from slimsearch.config import FinetuneConfig
from slimsearch.errors import TaskError
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.evaluators.train import distillation_targets, fit, teacher_logits
from slimsearch.tasks import Task
from slimsearch.tasks.digits import digits_splits
from slimsearch.tasks.loading import draw_indices, fingerprint, load_batches, sequential_batches


class Streamed(Dataset):
    """The same samples as a TensorDataset, but read one by one (as from disk); no fingerprint."""

    def __init__(self, tensors: TensorDataset, broken: int | None = None):
        self.inputs, self.labels = tensors.tensors
        self.broken = broken

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if index == self.broken:
            raise OSError(f"disk error reading sample {index}")
        return self.inputs[index].clone(), int(self.labels[index])


@pytest.fixture(scope="module")
def splits():
    return digits_splits(size=8)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_fit_trains_exactly_as_in_memory(splits, workers):
    train = splits[0]
    in_memory = fit(_model(), train, epochs=1.5, lr=3e-3, seed=3)
    streamed = fit(_model(), Streamed(train), epochs=1.5, lr=3e-3, seed=3, workers=workers)
    for (name, a), b in zip(in_memory.state_dict().items(), streamed.state_dict().values()):
        assert torch.equal(a, b), name


def test_fit_by_steps_runs_that_many_steps_across_epochs(splits):
    train = splits[0]  # 1078 samples: 17 batches of 64 per epoch
    steps = []
    fit(_model(), Streamed(train), steps=40, lr=1e-3, on_step=lambda: steps.append(1), workers=0)
    assert len(steps) == 40


def test_finetune_plan_in_steps_and_epochs():
    plan = FinetuneConfig(epochs=3.0, screen_epochs=1.0, batch_size=64).plan(1078)
    assert (plan.steps, plan.screen_step) == (51, 17) and plan.epochs == pytest.approx(3.0)
    plan = FinetuneConfig(steps=30, batch_size=64).plan(1_000_000)
    assert (plan.steps, plan.screen_step) == (30, 10)  # a third, as screen_epochs is of epochs by default
    assert FinetuneConfig(steps=30, screen_epochs=0).plan(100).screen_step is None


def test_streamed_accuracy_equals_in_memory(splits):
    model = fit(_model(), splits[0], epochs=1, lr=3e-3)
    assert accuracy(model, Streamed(splits[1]), workers=1) == pytest.approx(accuracy(model, splits[1]))


def test_teacher_logits_are_kept_on_disk_memory_mapped_and_keyed_by_data(splits, tmp_path):
    teacher = _model().eval()
    train = splits[0]
    logits = teacher_logits(teacher, train, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    with torch.no_grad():
        assert torch.allclose(logits, teacher(train.tensors[0]), atol=1e-5)
    stamp = files[0].stat().st_mtime_ns
    teacher_logits(teacher, train, cache_dir=tmp_path)  # read back, not recomputed
    assert files[0].stat().st_mtime_ns == stamp and len(list(tmp_path.glob("*.npy"))) == 1
    teacher_logits(teacher, splits[1], cache_dir=tmp_path)  # other data: another file
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_logits_on_the_fly_when_the_search_reads_little_of_the_split(splits, tmp_path):
    teacher, train = _model().eval(), Streamed(splits[0])
    # A dataset without a fingerprint cannot be keyed: always on the fly.
    assert callable(distillation_targets(teacher, train, samples_seen=10**9, cache_dir=tmp_path))
    train.fingerprint = "streamed-digits-v1"
    assert callable(distillation_targets(teacher, train, samples_seen=100, cache_dir=tmp_path))
    cached = distillation_targets(teacher, train, samples_seen=len(train), cache_dir=tmp_path)
    assert isinstance(cached, torch.Tensor) and len(cached) == len(train)
    index = torch.tensor([5, 1, 700])
    on_the_fly = distillation_targets(teacher, train, samples_seen=1, cache_dir=tmp_path)
    assert torch.allclose(on_the_fly(splits[0].tensors[0][index], index), cached[index], atol=1e-5)
    # Both train a student alike (the teacher's logits are the same numbers, computed at another time).
    students = [fit(_model(), train, steps=5, lr=3e-3, alpha=0.5, teacher_logits=targets, workers=0)
                for targets in (cached, on_the_fly)]
    for a, b in zip(students[0].state_dict().values(), students[1].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4)


def test_an_unreadable_sample_is_named(splits):
    with pytest.raises(TaskError, match=r"sample 100 cannot be used: OSError: disk error reading sample 100"):
        list(load_batches(Streamed(splits[1], broken=100), sequential_batches(len(splits[1]), 64), workers=1))


def test_fingerprint_follows_the_data(splits):
    assert fingerprint(splits[0]) == fingerprint(TensorDataset(*splits[0].tensors))
    assert fingerprint(splits[0]) != fingerprint(splits[1])
    assert fingerprint(Streamed(splits[0])) is None


def test_task_with_streamed_splits_draws_fixed_samples(splits):
    train, val, test = (Streamed(split) for split in splits)
    task = Task(name="streamed", teacher=_model().eval(), train=train, val=val, test=test,
                example_input=splits[0].tensors[0][:1], num_classes=10, val_samples=50, loader_workers=0)
    assert task.val_is_subset and len(task.search_val) == 50
    assert list(task.search_val.indices) == sorted(draw_indices(len(val), 50))  # seeded: the same in every process
    calibration = task.calibration_inputs()
    assert calibration.shape == (512, 1, 8, 8) and calibration is task.calibration_inputs()
    assert not torch.equal(calibration, splits[0].tensors[0][:512])  # a draw, not the first (for folders: one class)
    in_memory = Task(name="in-memory", teacher=_model().eval(), train=splits[0], val=splits[1], test=splits[2],
                     example_input=splits[0].tensors[0][:1], num_classes=10)
    assert torch.equal(in_memory.calibration_inputs(), splits[0].tensors[0][:512])  # as before streaming existed
    assert task.latency_samples(20).shape == (20, 1, 8, 8)
    full = Task(name="streamed", teacher=_model().eval(), train=train, val=val, test=test,
                example_input=splits[0].tensors[0][:1], num_classes=10, val_samples=10_000)
    assert not full.val_is_subset and full.search_val is val


def test_task_refuses_a_streamed_split_whose_samples_do_not_fit(splits):
    class Mislabelled(Streamed):
        def __getitem__(self, index):
            inputs, label = super().__getitem__(index)
            return inputs, label + (10 if index == len(self) - 1 else 0)

    with pytest.raises(TaskError, match=r"task 'odd': val sample 358 has label 1\d; labels must be integers in \[0, 9\]"):
        Task(name="odd", teacher=_model().eval(), train=splits[0], val=Mislabelled(splits[1]), test=splits[2],
             example_input=splits[0].tensors[0][:1], num_classes=10)
    with pytest.raises(TaskError, match=r"train sample 0 is \(1, 8, 8\) float32, but example_input's samples are "
                                        r"\(1, 9, 9\) float32"):
        Task(name="odd", teacher=nn.Sequential(nn.Flatten(), nn.Linear(81, 10)), train=Streamed(splits[0]),
             val=splits[1], test=splits[2], example_input=torch.zeros(1, 1, 9, 9), num_classes=10)
