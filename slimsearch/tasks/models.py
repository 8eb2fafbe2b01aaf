"""Teacher architectures of the built-in tasks.

Both are small residual CNNs: big enough that convolution compute, not per-op runtime
overhead, dominates their latency on ONNX Runtime, so removing channels shows up as speed.
"""

from __future__ import annotations

import torch
from torch import nn


class _ResidualBlock(nn.Module):
    """Two convolutions with a skip connection (a 1x1 projection when the shape changes)."""

    def __init__(self, conv: type[nn.Module], norm: type[nn.Module], c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResidualCNN(nn.Module):
    """A ResNet-like classifier: stem, one residual stage per width, global pooling, linear head.

    `dims` is 1 for sequences (N, C, L) and 2 for images (N, C, H, W).
    """

    def __init__(self, *, in_channels: int, num_classes: int, widths: tuple[int, ...], dims: int = 2,
                 blocks_per_stage: int = 1):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, but got {dims=}")
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
        self.stem = nn.Sequential(conv(in_channels, widths[0], 3, padding=1, bias=False), norm(widths[0]), nn.ReLU())
        stages = []
        c_in = widths[0]
        for index, width in enumerate(widths):
            blocks = [_ResidualBlock(conv, norm, c_in, width, stride=1 if index == 0 else 2)]
            blocks += [_ResidualBlock(conv, norm, width, width, stride=1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = pool
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))
