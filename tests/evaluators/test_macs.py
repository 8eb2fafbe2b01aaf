"""MACs are counted by torch's FlopCounterMode, and a candidate whose MACs fell but whose latency
did not is flagged."""

from __future__ import annotations

import pytest
import torch

from slimsearch.config import SpaceConfig
from slimsearch.evaluators.macs import FLAG_MACS_NOT_LATENCY, count_macs, flags, record_compute
from slimsearch.spaces import Candidate
from slimsearch.tasks.models import ResidualCNN
from slimsearch.techniques import build_student

EXAMPLE = torch.randn(1, 1, 24, 24)


class Recorder:
    """Stands where an Optuna trial would: only `set_user_attr` is used."""

    def __init__(self) -> None:
        self.user_attrs: dict = {}

    def set_user_attr(self, key, value) -> None:
        self.user_attrs[key] = value


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return ResidualCNN(in_channels=1, num_classes=10, widths=(16, 32)).eval()


def test_a_linear_layer_counts_its_weights_once_per_sample():
    layer = torch.nn.Linear(20, 7)
    assert count_macs(layer, torch.randn(5, 20)) == 20 * 7  # batch 1, whatever the example's batch


def test_pruning_halves_channels_and_cuts_macs_and_parameters(teacher):
    student = build_student(Candidate({"prune": {"stages.1.0.conv1": 0.5, "stages.1.0.shortcut.0": 0.5}}),
                            teacher, EXAMPLE, SpaceConfig())
    trial = Recorder()
    record_compute(trial, student, teacher, EXAMPLE)
    attrs = trial.user_attrs
    assert attrs["macs"] == count_macs(student, EXAMPLE) > 0
    assert 0.2 < attrs["macs_ratio"] < 0.8
    assert 0.2 < attrs["params_ratio"] < 0.8
    record_compute(trial, teacher, teacher, EXAMPLE)
    assert trial.user_attrs["macs_ratio"] == 1.0 and trial.user_attrs["params_ratio"] == 1.0


def test_an_early_exit_model_is_counted_along_its_whole_path(teacher):
    student = build_student(Candidate({"exits": {"stage1": 0.9, "criterion": "max_prob"}}), teacher, EXAMPLE,
                            SpaceConfig())
    assert count_macs(student, EXAMPLE) > count_macs(teacher, EXAMPLE)  # the body plus an exit head


@pytest.mark.parametrize(("macs_ratio", "speedup", "flagged"), [
    (0.5, 1.19, True),    # MACs halved, latency barely moved
    (0.25, 0.9, True),    # a quarter of the MACs and slower
    (0.5, 1.2, False),    # 1.2x faster is a real gain
    (0.51, 1.0, False),   # MACs fell less than 2x
    (None, 1.0, False),   # a trial from before MACs were counted
    (0.5, None, False),   # failed before its latency was measured
])
def test_flag_when_macs_fell_twofold_and_latency_under_one_point_two(macs_ratio, speedup, flagged):
    assert (flags(macs_ratio, speedup) == [FLAG_MACS_NOT_LATENCY]) is flagged
