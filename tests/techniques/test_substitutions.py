"""Depthwise-separable substitution and low-rank factorisation: shapes, parameters, initialisation."""

import pytest
import torch
from torch import nn

from slimsearch.techniques import lowrank, separable


@pytest.mark.parametrize("c_in, c_out, k", [(16, 32, 3), (8, 8, 5), (3, 24, 3)])
def test_separable_parameter_count_matches_the_formula(c_in, c_out, k):
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
    pair = separable.SeparableConv(conv)
    assert sum(p.numel() for p in pair.parameters()) == k * k * c_in + c_in * c_out
    assert sum(p.numel() for p in conv.parameters()) == k * k * c_in * c_out


def _relative_error(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    return float((approximation - reference).norm() / reference.norm())


@torch.no_grad()
def test_separable_output_starts_close_to_the_conv_bounded_by_the_discarded_rank():
    torch.manual_seed(0)
    x = torch.randn(8, 16, 12, 12)
    # A kernel that is rank 1 per input channel is exactly separable: nothing is discarded.
    rank_one = nn.Conv2d(16, 32, 3, padding=1, stride=2, bias=True)
    rank_one.weight.copy_(torch.randn(32, 16, 1, 1) * torch.randn(1, 16, 3, 3))
    exact = separable.SeparableConv(rank_one)
    assert exact.residual_energy < 1e-10
    assert _relative_error(rank_one(x), exact(x)) < 1e-5

    # A random kernel: the pair keeps each input channel's best rank-1 part. The output error is
    # reported and bounded by the energy of the discarded singular values (about one to one for
    # isotropic inputs, so 1.25x of slack), and it is far better than a random separable pair.
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=False)
    pair = separable.SeparableConv(conv)
    weight_error = pair.residual_energy ** 0.5
    output_error = _relative_error(conv(x), pair(x))
    print(f"separable init: relative weight error {weight_error:.3f}, relative output error {output_error:.3f}")
    assert 0 < output_error <= 1.25 * weight_error
    assert weight_error < 0.95  # rank 1 of 3x3 = 9 keeps more than a 1/9 share of the energy
    random_pair = separable.SeparableConv(conv)
    nn.init.normal_(random_pair.depthwise.weight)
    assert output_error < _relative_error(conv(x), random_pair(x))


@torch.no_grad()
@pytest.mark.parametrize("layer", [nn.Linear(64, 48), nn.Conv2d(64, 48, 1, stride=2)])
def test_lowrank_is_the_truncated_svd_and_saves_parameters(layer):
    torch.manual_seed(1)
    x = torch.randn(4, 64) if isinstance(layer, nn.Linear) else torch.randn(4, 64, 6, 6)
    rank = lowrank.rank_for(layer, 0.25)
    assert rank == 12
    pair = lowrank.LowRank(layer, rank)
    assert sum(p.numel() for p in pair.parameters()) == rank * (64 + 48) + 48
    assert pair(x).shape == layer(x).shape
    full = lowrank.LowRank(layer, 48)  # full rank: exact
    assert _relative_error(layer(x), full(x)) < 1e-5
    # Eckart-Young: the weight error is exactly the discarded singular values' energy.
    weight = layer.weight.reshape(48, 64)
    approx = (pair.up.weight.reshape(48, rank) @ pair.down.weight.reshape(rank, 64))
    assert abs(_relative_error(weight, approx) - pair.residual_energy ** 0.5) < 1e-4


def test_lowrank_leaves_a_layer_whole_when_the_rank_would_not_save_parameters():
    square = nn.Linear(32, 32)
    assert lowrank.rank_for(square, 0.5) is None  # 16 * 64 = 32 * 32: no saving
    model = nn.Sequential(square)
    lowrank.apply(model, {"0": 0.5})
    assert model[0] is square
    lowrank.apply(model, {"0": 0.25})
    assert isinstance(model[0], lowrank.LowRank)


def test_bad_names_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Linear(8, 4))
    with pytest.raises(ValueError, match="not a k x k"):
        separable.apply(model, {"0": True})
    with pytest.raises(ValueError, match="not a linear layer"):
        lowrank.apply(model, {"nope": 0.5})


def test_low_rank_knobs_offer_no_rank_one_each_rank_once_and_the_output_layer_half_its_outputs():
    from slimsearch.config import SpaceConfig
    from slimsearch.spaces.lowrank import LowRankFamily

    def offered(model, ratios=(0.5, 0.25, 0.2, 0.125)):
        knobs, untouched = LowRankFamily().discover(model, torch.zeros(1, 64), SpaceConfig(rank_ratios=ratios))
        return {k.target: k.domain.options for k in knobs}, {u.target: u.reason for u in untouched}

    # An inner 64 -> 10 layer: rank 1 at 0.125 is never offered, rank 2 (0.25 and 0.2) once.
    knobs, _ = offered(nn.Sequential(nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 7)))
    assert knobs["0"] == (1.0, 0.5, 0.25)
    # The same layer as the model's output layer: only ranks of at least half its 10 outputs.
    knobs, _ = offered(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    assert knobs == {"1": (1.0, 0.5)}
    # Every ratio asks a 64 -> 2 layer for rank 1: left whole, with the reason.
    knobs, untouched = offered(nn.Sequential(nn.Linear(64, 2), nn.ReLU(), nn.Linear(2, 7)))
    assert "0" not in knobs and "below 2" in untouched["0"]
