"""The `mnist1d` task: MNIST-1D sequences (Greydanus, 2020) and a 1-D residual CNN teacher.

The data is generated locally with `mnist1d.data.make_dataset` (never `get_dataset`, which
downloads or writes a pickle into the working directory) and kept in the cache as tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from slimsearch.evaluators.train import fit
from slimsearch.tasks.base import Task
from slimsearch.tasks.models import ResidualCNN
from slimsearch.tasks.registry import register_task
from slimsearch.tasks.teachers import default_cache_dir, task_with_cached_teacher, teacher_key

SPLIT_SEED = 0
VAL_FRACTION = 0.15
WIDTHS = (32, 64, 128)
# About 99% test accuracy (bar: 90%; the published CNN reaches ~94%) in about 15 s on 2 CPU cores.
EPOCHS = 30
LR = 3e-3
BATCH_SIZE = 64
DATA_VERSION = "1"


def mnist1d_arrays(*, cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """MNIST-1D with its default arguments: `x`, `y` (4000 train) and `x_test`, `y_test` (1000), x as (N, 1, 40)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    import mnist1d.data  # lazy: it imports matplotlib and requests

    args = mnist1d.data.get_dataset_args()
    settings = {k: v for k, v in vars(args).items() if k != "url"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"mnist1d-data-v{DATA_VERSION}-{digest}.pt"
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt file: regenerate below (generation is deterministic)
            pass
    # make_dataset reseeds the global `random` and numpy RNGs; restore them for the caller.
    random_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        raw = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(random_state)
        np.random.set_state(numpy_state)
    arrays = {
        "x": torch.tensor(raw["x"], dtype=torch.float32).unsqueeze(1),
        "y": torch.tensor(raw["y"], dtype=torch.long),
        "x_test": torch.tensor(raw["x_test"], dtype=torch.float32).unsqueeze(1),
        "y_test": torch.tensor(raw["y_test"], dtype=torch.long),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent writers produce identical bytes, so a private tmp file and rename suffice.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(arrays, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return arrays


def mnist1d_splits(*, cache_dir: Path | None = None) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """MNIST-1D's train part split 85/15 (stratified, fixed seed) into train/val; its test part as test."""
    from sklearn.model_selection import train_test_split

    arrays = mnist1d_arrays(cache_dir=cache_dir)
    x, y = arrays["x"], arrays["y"]
    train_idx, val_idx = train_test_split(np.arange(len(y)), test_size=VAL_FRACTION, stratify=y.numpy(),
                                          random_state=SPLIT_SEED)
    return (TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx]),
            TensorDataset(arrays["x_test"], arrays["y_test"]))


@register_task("mnist1d")
def mnist1d_task(*, cache_dir: Path | None = None, seed: int = 0) -> Task:
    """MNIST-1D (N, 1, 40) with a 1-D `ResidualCNN(widths=(32, 64, 128))` teacher trained from scratch."""
    train, val, test = mnist1d_splits(cache_dir=cache_dir)

    def build() -> ResidualCNN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ResidualCNN(in_channels=1, num_classes=10, widths=WIDTHS, dims=1)

    length = train.tensors[0].shape[-1]
    key = teacher_key("mnist1d", widths=WIDTHS, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=seed,
                      input=(1, length), split_seed=SPLIT_SEED, data=DATA_VERSION)
    return task_with_cached_teacher(
        name="mnist1d", splits=(train, val, test), build=build, key=key,
        train=lambda model: fit(model, train, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=seed),
        dataset="mnist1d", cache_dir=cache_dir, seed=seed,
        description=f"MNIST-1D sequences of length {length}; 1-D ResidualCNN{WIDTHS} teacher",
    )
