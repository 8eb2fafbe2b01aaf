"""The `digits` task: scikit-learn's 8x8 handwritten digits and a small residual CNN teacher.

The images are upsampled to 24x24 so the teacher's convolutions, not per-op runtime
overhead, dominate its latency; otherwise removing channels would barely change speed.
The data ships inside scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from slimsearch.evaluators.train import fit
from slimsearch.tasks.base import Task
from slimsearch.tasks.digits_data import IMAGE_SIZE, SPLIT_SEED, digits_splits  # noqa: F401  (digits_splits: re-exported)
from slimsearch.tasks.models import ResidualCNN
from slimsearch.tasks.registry import register_task
from slimsearch.tasks.teachers import task_with_cached_teacher, teacher_key

WIDTHS = (32, 64, 128)
# 10 epochs reach about 99.5% test accuracy (the bar is 97%) in about 10 s on 2 CPU cores.
EPOCHS = 10
LR = 3e-3
BATCH_SIZE = 64


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

