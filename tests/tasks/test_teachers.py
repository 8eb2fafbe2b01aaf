"""The teacher cache: train once, load after, retrain on a new recipe, one trainer at a time."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from slimsearch.tasks.teachers import default_cache_dir, load_or_train_teacher, teacher_key


class _Recipe:
    """A tiny teacher whose training counts how often it ran."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.trained = 0
        self.lock = threading.Lock()

    def build(self) -> nn.Module:
        return nn.Linear(4, 3)

    def train(self, model: nn.Module) -> nn.Module:
        with self.lock:
            self.trained += 1
        time.sleep(self.delay)
        with torch.no_grad():
            model.weight.fill_(0.5)
        return model

    def load(self, cache_dir, key="tiny/v1/epochs=1"):
        return load_or_train_teacher(key=key, build=self.build, train=self.train,
                                     evaluate=lambda m: {"val_accuracy": 0.5, "test_accuracy": 0.25},
                                     cache_dir=cache_dir, label="tiny teacher", seed=3)


def test_trains_once_then_loads(tmp_path, capsys):
    recipe = _Recipe()
    model, info = recipe.load(tmp_path)
    assert "training the tiny teacher once (cached in" in capsys.readouterr().err
    assert info["trained_now"] and not model.training
    again, info = recipe.load(tmp_path)
    assert recipe.trained == 1 and not info["trained_now"]
    assert torch.equal(again.weight, torch.full((3, 4), 0.5))
    meta = json.loads((tmp_path / next(p.name for p in tmp_path.glob("*.json"))).read_text())
    assert meta["test_accuracy"] == 0.25 and meta["seed"] == 3 and meta["torch_version"] == torch.__version__
    assert not list(tmp_path.glob("*.tmp"))


def test_a_new_recipe_retrains(tmp_path):
    recipe = _Recipe()
    recipe.load(tmp_path, key=teacher_key("tiny", epochs=1, widths=(2, 3)))
    recipe.load(tmp_path, key=teacher_key("tiny", epochs=2, widths=(2, 3)))
    assert recipe.trained == 2


def test_a_corrupt_cache_file_is_retrained(tmp_path):
    recipe = _Recipe()
    _, info = recipe.load(tmp_path)
    Path(info["cache_path"]).write_bytes(b"not a checkpoint")
    _, info = recipe.load(tmp_path)
    assert info["trained_now"] and recipe.trained == 2


def test_concurrent_callers_train_once(tmp_path, capsys):
    # flock locks belong to open file descriptions, so threads contend as processes would.
    recipe = _Recipe(delay=0.5)
    results = []
    threads = [threading.Thread(target=lambda: results.append(recipe.load(tmp_path)[1])) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recipe.trained == 1
    assert sorted(info["trained_now"] for info in results) == [False, False, True]
    assert "waiting for another process to train the tiny teacher" in capsys.readouterr().err


def test_teacher_key_names_version_and_recipe():
    assert teacher_key("digits", widths=(32, 64), epochs=10, seed=0) == "digits/v1/epochs=10/seed=0/widths=32x64"


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIMSEARCH_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("SLIMSEARCH_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "slimsearch")


def test_bad_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        _Recipe().load(tmp_path, key="")
