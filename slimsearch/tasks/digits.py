"""The `digits` task: scikit-learn's 8x8 handwritten digits and a small residual CNN teacher.

The images are upsampled to 24x24 so the teacher's convolutions, not per-op runtime
overhead, dominate its latency; otherwise removing channels would barely change speed.
The data ships inside scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from slimsearch.evaluators.train import fit
from slimsearch.tasks.base import Task
from slimsearch.tasks.models import ResidualCNN
from slimsearch.tasks.registry import register_task
from slimsearch.tasks.teachers import task_with_cached_teacher, teacher_key

# The split is part of the task's definition, fixed whatever the teacher's seed, so every
# run reports on the same test images.
SPLIT_SEED = 0
IMAGE_SIZE = 24
WIDTHS = (32, 64, 128)
# 10 epochs reach about 99.5% test accuracy (the bar is 97%) in about 10 s on 2 CPU cores.
EPOCHS = 10
LR = 3e-3
BATCH_SIZE = 64


def digits_splits(*, size: int = IMAGE_SIZE, channels: int = 1) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Train/val/test (60/20/20, stratified, fixed seed) of the digits, as float32 (N, channels, size, size).

    Pixels are scaled to [0, 1] and resized with bilinear interpolation; channels > 1 repeats
    the grey channel (for models that expect RGB).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, channels, 1, 1)
    y = torch.tensor(labels, dtype=torch.long)
    index = np.arange(len(y))
    train_idx, rest_idx = train_test_split(index, test_size=0.4, stratify=labels, random_state=SPLIT_SEED)
    val_idx, test_idx = train_test_split(rest_idx, test_size=0.5, stratify=labels[rest_idx], random_state=SPLIT_SEED)
    return tuple(TensorDataset(x[i].contiguous(), y[i]) for i in (train_idx, val_idx, test_idx))


@register_task("digits")
def digits_task(*, cache_dir: Path | None = None, seed: int = 0) -> Task:
    """Digits 24x24 with a `ResidualCNN(widths=(32, 64, 128))` teacher trained from scratch."""
    train, val, test = digits_splits()

    def build() -> ResidualCNN:
        # Forked so seeding the init does not reset the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ResidualCNN(in_channels=1, num_classes=10, widths=WIDTHS, dims=2)

    key = teacher_key("digits", widths=WIDTHS, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=seed,
                      input=(1, IMAGE_SIZE, IMAGE_SIZE), split_seed=SPLIT_SEED)
    return task_with_cached_teacher(
        name="digits", splits=(train, val, test), build=build, key=key,
        train=lambda model: fit(model, train, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=seed),
        dataset="digits", cache_dir=cache_dir, seed=seed,
        description=f"scikit-learn 8x8 digits upsampled to {IMAGE_SIZE}x{IMAGE_SIZE}; ResidualCNN{WIDTHS} teacher",
    )

