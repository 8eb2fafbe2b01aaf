"""What the separable, low-rank and exit families offer on a model, and what they leave alone."""

import torch
from torch import nn

from slimsearch.config import SpaceConfig
from slimsearch.spaces import Candidate, Space
from slimsearch.spaces.warm_start import starting_candidates
from slimsearch.tasks.models import ResidualCNN

FAMILIES = ("prune", "quant", "distill", "separable", "lowrank", "exits")


def _space(batch_size: int = 1) -> Space:
    model = ResidualCNN(in_channels=1, num_classes=10, widths=(16, 32, 64)).eval()
    return Space.discover(model, torch.randn(1, 1, 24, 24), SpaceConfig(families=FAMILIES), batch_size=batch_size)


def test_each_family_names_its_layers_and_why_others_are_left_alone():
    space = _space()
    targets = {family: [k.target for k in space.knobs if k.family == family] for family in FAMILIES}
    assert targets["separable"][0] == "stem.0" and len(targets["separable"]) == 7  # stem + two convs per block
    assert targets["lowrank"] == ["stages.1.0.shortcut.0", "stages.2.0.shortcut.0", "head"]
    assert targets["exits"] == ["criterion", "stage1", "stage2"]  # none after the last stage
    reasons = {(u.family, u.target): u.reason for u in space.untouched}
    assert reasons[("separable", "stages.1.0.shortcut.0")] == "a 1 x 1 kernel"


def test_exits_are_left_out_for_batched_targets_with_the_reason():
    space = _space(batch_size=8)
    assert not [k for k in space.knobs if k.family == "exits"]
    assert any(u.family == "exits" and "target.batch_size is 8" in u.reason for u in space.untouched)


def test_an_untraceable_model_gets_no_exits_and_a_reason():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            if x.sum() > 0:  # Python control flow on data: torch.fx cannot trace it
                x = -x
            return self.head(self.conv2(self.conv(x)).mean((2, 3)))

    space = Space.discover(DataDependent(), torch.randn(1, 1, 8, 8), SpaceConfig(families=("exits",)))
    assert not space.knobs and "torch.fx cannot trace" in space.untouched[0].reason


def test_warm_start_candidates_are_valid_points_of_the_space():
    space = _space()
    starts = starting_candidates(space)
    assert starts[-1] == space.default_candidate()
    # prune 0.5 and 0.8 + int8, one exit, every exit with 0.5 pruning, the hand baseline's other 14 points, int8,
    # teacher
    assert len(starts) == len(set(starts)) == 20
    for candidate in starts:
        for knob in space.knobs:
            value = candidate.family(knob.family)[knob.target]
            if hasattr(knob.domain, "options"):
                assert value in knob.domain.options
            else:
                assert knob.domain.low <= value <= knob.domain.high
    assert Candidate.from_json(starts[2].to_json()).family("exits")["stage1"] == 0.9


def test_bad_architecture_settings_name_the_value_and_what_is_allowed():
    import pytest

    from slimsearch.config import SearchConfig
    from slimsearch.errors import ConfigError

    cases = [({"rank_ratios": [1.5]}, "space.rank_ratios must hold shares of the full rank in (0, 1), but got 1.5"),
             ({"exit_thresholds": [0.5, 2]}, "space.exit_thresholds must hold confidences in [0, 1], but got 2"),
             ({"exit_criteria": ["margin"]}, "'margin'"),
             ({"rank_ratios": []}, "space.rank_ratios must be a non-empty list")]
    for space, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            SearchConfig.from_mapping({"space": space})
