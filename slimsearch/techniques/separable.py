"""Depthwise-separable substitution: a k x k convolution becomes a depthwise k x k followed by a
pointwise 1 x 1, initialised from the original kernel.

Parameters go from k^d * C_in * C_out to k^d * C_in + C_in * C_out. The pair computes
`W[o, i] ~= P[o, i] * D[i]`: for each input channel i, the C_out x k^d matrix of the original
kernel is replaced by its best rank-1 approximation (truncated SVD), so the fine-tune starts as
close to the teacher as a separable layer can be. The error left is exactly the energy of the
discarded singular values (`residual_energy`).
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.techniques.replacement import Replacement, replace_module

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def is_eligible(layer: nn.Module) -> bool:
    """A plain (groups = 1) convolution with a kernel larger than 1 x 1."""
    return (isinstance(layer, tuple(CONVS.values())) and layer.groups == 1
            and any(k > 1 for k in layer.kernel_size) and layer.padding_mode == "zeros")


class SeparableConv(Replacement):
    output_layer = "pointwise"

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        dims = len(conv.kernel_size)
        conv_cls = CONVS[dims]
        c_in, c_out = conv.in_channels, conv.out_channels
        self.depthwise = conv_cls(c_in, c_in, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                                  dilation=conv.dilation, groups=c_in, bias=False)
        self.pointwise = conv_cls(c_in, c_out, 1, bias=conv.bias is not None)
        self.residual_energy = _initialise(self, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


@torch.no_grad()
def _initialise(pair: SeparableConv, conv: nn.Module) -> float:
    """Set the pair from `conv`'s kernel by per-input-channel rank-1 SVD; returns the share of the
    kernel's energy (squared Frobenius norm) the pair cannot represent."""
    weight = conv.weight.detach().float()
    c_out, c_in = weight.shape[:2]
    kernel = weight.shape[2:]
    per_input = weight.transpose(0, 1).reshape(c_in, c_out, -1)  # (C_in, C_out, k^d)
    u, s, vh = torch.linalg.svd(per_input, full_matrices=False)
    pair.pointwise.weight.copy_((u[:, :, 0] * s[:, :1]).T.reshape(c_out, c_in, *([1] * len(kernel))))
    pair.depthwise.weight.copy_(vh[:, 0, :].reshape(c_in, 1, *kernel))
    if conv.bias is not None:
        pair.pointwise.bias.copy_(conv.bias)
    total = float((s ** 2).sum())
    return float((s[:, 1:] ** 2).sum()) / total if total > 0 else 0.0


def apply(model: nn.Module, choices: dict[str, bool]) -> nn.Module:
    """Replace each conv named with a true choice by its separable pair, in place."""
    modules = dict(model.named_modules())
    for name, chosen in choices.items():
        if not chosen:
            continue
        layer = modules.get(name)
        if not is_eligible(layer):
            raise ValueError(f"separable substitution names {name!r}, which is not a k x k (k > 1), "
                             "groups = 1 convolution of the model")
        replace_module(model, name, SeparableConv(layer).to(layer.weight.device))
    return model
