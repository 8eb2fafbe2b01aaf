"""`torchvision:<model>` with `--data DIR --weights CKPT`: the user's images and checkpoint, and user factories from the current folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from slimsearch.errors import TaskError
from slimsearch.tasks import create_task
from slimsearch.tasks.folder_task import _usual_input
from slimsearch.tasks.loading import fingerprint
from tests.conftest import REPO
from tests.tasks.image_data import random_checkpoint, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Digits as 32x32 RGB PNGs, 5 per class: 30 train, 10 val, 10 test."""
    return write_folder(tmp_path_factory.mktemp("images") / "digits", size=32, limit_per_class=5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "resnet18.pt", "resnet18", 10)


def test_folder_task_reads_classes_splits_and_checkpoint(folder, checkpoint, tmp_path):
    task = create_task("torchvision:resnet18", data=str(folder), weights=str(checkpoint), image_size=32,
                       cache_dir=tmp_path)
    assert task.num_classes == 10 and task.info["classes"] == [str(digit) for digit in range(10)]
    assert (len(task.train), len(task.val), len(task.test)) == (30, 10, 10)
    assert task.example_input.shape == (1, 3, 32, 32) and task.example_input.dtype == torch.float32
    assert task.info["val_split"] == "val/" and task.info["test_split"] == "test/"
    saved = torch.load(checkpoint, weights_only=True)
    for name, tensor in task.teacher.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    image, label = task.test[3]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert float(image.min()) < -1.0 < 1.0 < float(image.max())  # normalised with ImageNet's mean and std


def test_without_val_and_test_folders_a_seeded_share_of_train_is_held_out(folder, checkpoint, tmp_path):
    only_train = tmp_path / "only-train"
    shutil.copytree(folder / "train", only_train / "train")
    first = create_task("torchvision:resnet18", data=str(only_train), weights=str(checkpoint), image_size=32,
                        cache_dir=tmp_path)
    again = create_task("torchvision:resnet18", data=str(only_train), weights=str(checkpoint), image_size=32,
                        cache_dir=tmp_path)
    assert (len(first.train), len(first.val)) == (20, 10)  # 20% of each class's 3 images: 1 of 3, 10 classes
    assert [first.val.sample_path(i) for i in range(10)] == [again.val.sample_path(i) for i in range(10)]
    assert first.info["test_split"].startswith("the validation split")
    assert {first.val.sample_path(i) for i in range(10)}.isdisjoint(first.train.sample_path(i) for i in range(20))


@pytest.mark.parametrize("wrap", [{"key": "state_dict"}, {"prefix": "module."}, {"key": "model", "prefix": "_orig_mod."}])
def test_checkpoints_as_training_scripts_save_them(folder, tmp_path, wrap):
    path = random_checkpoint(tmp_path / "wrapped.pt", "resnet18", 10, **wrap)
    task = create_task("torchvision:resnet18", data=str(folder), weights=str(path), image_size=32, cache_dir=tmp_path)
    assert task.num_classes == 10


def test_default_image_size_is_the_models_usual_input():
    import torchvision

    for name, size in (("resnet18", 224), ("efficientnet_b1", 240)):
        net = torchvision.models.get_model(name, weights=None, num_classes=3)
        assert _usual_input("torchvision", name, net)[0] == size, name


def test_a_changed_folder_is_checked_again(folder, checkpoint, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    task = create_task("torchvision:resnet18", data=str(copy), weights=str(checkpoint), image_size=32, cache_dir=tmp_path)
    before = fingerprint(task.train)
    (copy / "train" / "3" / "zz-broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(TaskError, match=r"image '.*zz-broken.png' cannot be read"):
        create_task("torchvision:resnet18", data=str(copy), weights=str(checkpoint), image_size=32, cache_dir=tmp_path)
    (copy / "train" / "3" / "zz-broken.png").unlink()
    image = next((copy / "train" / "3").iterdir())
    image.write_bytes(image.read_bytes())  # same pixels, new modification time: the cached logits' key moves
    os.utime(image, ns=(1, 1))
    after = create_task("torchvision:resnet18", data=str(copy), weights=str(checkpoint), image_size=32, cache_dir=tmp_path)
    assert fingerprint(after.train) != before


def test_user_factory_is_found_in_the_current_folder_without_pythonpath(tmp_path):
    """As a console script runs: sys.path[0] is the script's folder, not the current one."""
    project, tools = tmp_path / "project", tmp_path / "tools"
    project.mkdir(), tools.mkdir()
    (project / "mymodule.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from slimsearch.tasks import Task
        from slimsearch.tasks.digits import digits_splits

        def make():
            train, val, test = digits_splits(size=8)
            torch.manual_seed(0)
            teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
            return Task(name="mine", teacher=teacher, train=train, val=val, test=test,
                        example_input=train.tensors[0][:1], num_classes=10)
    """))
    (tools / "slimsearch_script.py").write_text("from slimsearch.cli import main\nmain()\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)  # slimsearch itself, as an installed package would be; not the project folder
    done = subprocess.run([sys.executable, str(tools / "slimsearch_script.py"), "run", "--task", "mymodule:make",
                           "--latency-budget", "2x", "--trials", "1", "--epochs", "0.2", "--runs-dir", "runs", "--quiet"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (project / "runs" / "mymodule-make" / "study.db").exists()


def test_timm_model_with_its_checkpoint(folder, tmp_path):
    """Runs where the optional extra is installed (pip install 'slimsearch[timm]'); skipped elsewhere."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    path = tmp_path / "resnet10t.pt"
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=10).state_dict(), path)
    task = create_task("timm:resnet10t", data=str(folder), weights=str(path), image_size=32, cache_dir=tmp_path)
    assert task.name == "timm:resnet10t" and task.example_input.shape == (1, 3, 32, 32)
    default = create_task("timm:resnet10t", data=str(folder), weights=str(path), cache_dir=tmp_path)
    assert default.info["image_size"] == timm.create_model("resnet10t").pretrained_cfg["input_size"][-1]
