"""The digits data itself: scikit-learn's 8x8 digits, split and upsampled, with no task or teacher.

A module of its own so that other tasks (torchvision models trained on digits) read the data
without importing the digits task and its registration.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

# The split is part of the task's definition, fixed whatever the teacher's seed, so every
# run reports on the same test images.
SPLIT_SEED = 0
IMAGE_SIZE = 24


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
