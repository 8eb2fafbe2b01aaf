"""Built-in tasks, torchvision tasks, user factories and their errors.

Teachers are trained once into the real cache ($SLIMSEARCH_CACHE or ~/.cache/slimsearch), so
other test files and later runs reuse them instead of retraining.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from slimsearch.errors import TaskError
from slimsearch.evaluators.train import predict_logits
from slimsearch.tasks import Task, create_task, list_tasks, register_task
from slimsearch.tasks.digits import digits_splits

REPO_ROOT = Path(__file__).resolve().parents[2]


def _test_accuracy(task: Task) -> float:
    inputs, labels = task.test.tensors
    return (predict_logits(task.teacher, inputs).argmax(dim=1) == labels).float().mean().item()


def _check_task_contract(task: Task) -> None:
    assert not task.teacher.training
    assert all(p.device.type == "cpu" for p in task.teacher.parameters())
    for key in ("teacher_test_accuracy", "teacher_val_accuracy", "dataset", "description"):
        assert key in task.info, key
    with torch.no_grad():
        assert task.teacher(task.example_input).shape == (1, task.num_classes)


@pytest.fixture(scope="module")
def digits_task() -> Task:
    return create_task("digits")


def test_list_tasks_names_builtins_and_patterns():
    assert list_tasks() == ["digits", "mnist1d", "torchvision:<model>", "timm:<model>", "package.module:function"]


def test_digits_shapes_and_teacher_accuracy(digits_task):
    task = digits_task
    assert task.example_input.shape == (1, 1, 24, 24)
    assert task.example_input.dtype == torch.float32
    sizes = [len(task.train), len(task.val), len(task.test)]
    assert sum(sizes) == 1797
    assert sizes == pytest.approx([0.6 * 1797, 0.2 * 1797, 0.2 * 1797], abs=2)
    for split in (task.train, task.val, task.test):
        inputs, labels = split.tensors
        assert inputs.shape[1:] == (1, 24, 24) and labels.dtype == torch.long
        assert 0.0 <= inputs.min() and inputs.max() <= 1.0
    _check_task_contract(task)
    accuracy = _test_accuracy(task)
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(task.info["teacher_test_accuracy"], abs=1e-6)


def test_digits_splits_are_a_stratified_partition():
    from sklearn.datasets import load_digits

    train, val, test = digits_splits(size=8)
    # Some digits images occur twice, so compare multisets of rows, not sets.
    split_rows = Counter(row.numpy().tobytes() for split in (train, val, test) for row in split.tensors[0])
    full = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    assert split_rows == Counter(row.numpy().tobytes() for row in full)
    all_counts = Counter(torch.cat([s.tensors[1] for s in (train, val, test)]).tolist())
    for split, fraction in ((train, 0.6), (val, 0.2), (test, 0.2)):
        counts = Counter(split.tensors[1].tolist())
        for label, total in all_counts.items():
            assert abs(counts[label] - fraction * total) <= 2, (label, counts[label], total)


def test_digits_second_create_loads_from_cache(digits_task):
    meta_path = Path(digits_task.info["teacher_cache_path"]).with_suffix(".json")
    mtime = meta_path.stat().st_mtime_ns
    start = time.perf_counter()
    again = create_task("digits")
    assert time.perf_counter() - start < 5.0
    assert again.info["teacher_trained_now"] is False
    assert meta_path.stat().st_mtime_ns == mtime
    for (name, a), (_, b) in zip(digits_task.teacher.state_dict().items(), again.teacher.state_dict().items()):
        assert torch.equal(a, b), name


def test_mnist1d_teacher_accuracy():
    task = create_task("mnist1d")
    assert task.example_input.shape == (1, 1, 40)
    assert len(task.test) == 1000 and len(task.train) + len(task.val) == 4000
    _check_task_contract(task)
    assert _test_accuracy(task) >= 0.90


@pytest.mark.parametrize("model", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_torchvision_task_builds_and_forwards(model):
    task = create_task(f"torchvision:{model}")
    assert task.name == f"torchvision:{model}"
    assert task.example_input.shape == (1, 3, 32, 32)
    _check_task_contract(task)
    assert task.info["dataset"] == "digits"


def test_unknown_task_name_lists_what_is_allowed():
    with pytest.raises(TaskError) as error:
        create_task("foo")
    message = str(error.value)
    assert message.startswith("unknown task 'foo': expected one of 'digits', 'mnist1d', 'torchvision:<model>'")
    assert "'package.module:function'" in message and "\n" not in message


def test_unknown_task_name_suggests_a_close_one():
    with pytest.raises(TaskError, match="did you mean 'digits'"):
        create_task("digit")


def test_unknown_torchvision_model_suggests_a_close_one():
    with pytest.raises(TaskError) as error:
        create_task("torchvision:resnet19")
    message = str(error.value)
    assert "unknown torchvision model 'resnet19' in task 'torchvision:resnet19'" in message
    assert "did you mean" in message and "resnet18" in message
    assert "torchvision.models.list_models()" in message


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
def test_torchvision_model_needing_bigger_inputs_is_a_task_error(tmp_path):
    with pytest.raises(TaskError, match=r"torchvision:inception_v3.*\(N, 3, 32, 32\)"):
        create_task("torchvision:inception_v3", cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.pt"))


@pytest.fixture
def importable_tests(monkeypatch):
    # `tests.tasks.factories` must import however pytest was started (`pytest` vs `python -m pytest`).
    monkeypatch.syspath_prepend(str(REPO_ROOT))


def test_user_factory_returns_its_task(importable_tests):
    task = create_task("tests.tasks.factories:good")
    assert isinstance(task, Task) and task.name == "tiny-digits"


@pytest.mark.parametrize("spec, problem", [
    ("tests.tasks.factories:bad_return", "returned int"),
    ("tests.tasks.factories:missing", "has no attribute 'missing'"),
    ("tests.tasks.factories:not_callable", "is not callable"),
    ("tests.tasks.factories:raises", "raised RuntimeError: the user's data is missing"),
    ("tests.tasks.no_such_module:good", "cannot import module 'tests.tasks.no_such_module'"),
    ("tests.tasks.factories:", "not of the form 'package.module:function'"),
])
def test_broken_user_factory_is_a_task_error_naming_it(importable_tests, spec, problem):
    with pytest.raises(TaskError) as error:
        create_task(spec)
    assert repr(spec) in str(error.value)
    assert problem in str(error.value)


def test_registering_a_duplicate_name_fails_loudly():
    with pytest.raises(ValueError, match="'digits' is already registered"):
        register_task("digits")(lambda *, cache_dir=None, seed=0: None)
    with pytest.raises(ValueError, match="without ':'"):
        register_task("torchvision:mine")
