"""Low-rank factorisation: a linear layer (or 1 x 1 convolution) W becomes two, `up @ down`,
from the truncated SVD of W at a searched rank ratio.

With W of shape (out, in) and rank r, parameters go from out * in to r * (out + in). A rank
that would not save parameters leaves the layer as it is: it could only be slower and bigger;
so does a rank below MIN_RANK.
The split is the best rank-r approximation of W (Eckart-Young), balanced as U sqrt(S) and
sqrt(S) V^T so both factors train at similar scales.
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.techniques.replacement import Replacement, replace_module

POINTWISE = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
# A layer factorised to rank 1 passes one number per sample (per position, for a 1 x 1 conv). On
# a classifier's head that caps accuracy by construction: its logits lie on a line, so only the
# two classes at the line's ends can ever win. Digits' head (10 classes) at the ratio 0.125 is
# rank 1, and three trials that took it fine-tuned to 20.1-20.6% whatever else they did.
MIN_RANK = 2


def is_eligible(layer: nn.Module) -> bool:
    """A linear layer, or a plain 1 x 1 convolution; either with at least 2 inputs and outputs."""
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features) >= 2
    return (isinstance(layer, tuple(POINTWISE.values())) and layer.groups == 1
            and all(k == 1 for k in layer.kernel_size) and min(layer.in_channels, layer.out_channels) >= 2)


def shape_of(layer: nn.Module) -> tuple[int, int]:
    """(outputs, inputs) of a linear layer or 1 x 1 conv."""
    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features
    return layer.out_channels, layer.in_channels


def rank_for(layer: nn.Module, ratio: float) -> int | None:
    """The rank a ratio asks for (of the full rank min(out, in)), or None when it saves nothing."""
    return rank_for_shape(*shape_of(layer), ratio)


def rank_for_shape(outputs: int, inputs: int, ratio: float) -> int | None:
    """`rank_for` from the layer's (outputs, inputs) alone."""
    rank = round(ratio * min(outputs, inputs))
    return rank if rank >= MIN_RANK and rank * (outputs + inputs) < outputs * inputs else None


class LowRank(Replacement):
    output_layer = "up"

    def __init__(self, layer: nn.Module, rank: int) -> None:
        super().__init__()
        has_bias = layer.bias is not None
        if isinstance(layer, nn.Linear):
            self.down = nn.Linear(layer.in_features, rank, bias=False)
            self.up = nn.Linear(rank, layer.out_features, bias=has_bias)
        else:
            conv = POINTWISE[len(layer.kernel_size)]
            self.down = conv(layer.in_channels, rank, 1, stride=layer.stride, padding=layer.padding, bias=False)
            self.up = conv(rank, layer.out_channels, 1, bias=has_bias)
        self.residual_energy = _initialise(self, layer, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


@torch.no_grad()
def _initialise(pair: LowRank, layer: nn.Module, rank: int) -> float:
    weight = layer.weight.detach().float()
    matrix = weight.reshape(weight.shape[0], weight.shape[1])
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    pair.up.weight.copy_((u[:, :rank] * root).reshape(pair.up.weight.shape))
    pair.down.weight.copy_((root[:, None] * vh[:rank]).reshape(pair.down.weight.shape))
    if layer.bias is not None:
        pair.up.bias.copy_(layer.bias)
    total = float((s ** 2).sum())
    return float((s[rank:] ** 2).sum()) / total if total > 0 else 0.0


def apply(model: nn.Module, ratios: dict[str, float]) -> nn.Module:
    """Factorise each named layer at its rank ratio (1.0 keeps it whole), in place."""
    modules = dict(model.named_modules())
    for name, ratio in ratios.items():
        layer = modules.get(name)
        if not is_eligible(layer):
            raise ValueError(f"low-rank factorisation names {name!r}, which is not a linear layer or "
                             "1 x 1 convolution of the model")
        if not 0 < float(ratio) <= 1:
            raise ValueError(f"low-rank ratio for {name!r} must be in (0, 1], but got {ratio!r}")
        rank = rank_for(layer, float(ratio)) if ratio < 1 else None
        if rank is not None:
            replace_module(model, name, LowRank(layer, rank).to(layer.weight.device))
    return model
