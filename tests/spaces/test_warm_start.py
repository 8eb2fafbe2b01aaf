"""The warm start: the hand baseline's points, and ratios spread by layer sensitivity."""

import pytest

from slimsearch.config import SpaceConfig
from slimsearch.spaces import Space
from slimsearch.spaces.warm_start import (HAND_RATIOS, INT4, INT8, hand_baseline, mixed_precision,
                                          spread_by_sensitivity, starting_candidates, uses_sensitivity)
from slimsearch.tasks import create_task


@pytest.fixture(scope="module")
def digits_space():
    task = create_task("digits")
    return Space.discover(task.teacher, task.example_input, SpaceConfig())


def test_hand_baseline_is_uniform_pruning_at_each_ratio_with_and_without_int8(digits_space):
    points = hand_baseline(digits_space)
    assert len(points) == 2 * len(HAND_RATIOS)
    for index, ratio in enumerate(HAND_RATIOS):
        plain, int8 = points[2 * index], points[2 * index + 1]
        assert set(plain.family("prune").values()) == {ratio} == set(int8.family("prune").values())
        assert set(plain.family("quant").values()) == {"32-float"}
        assert set(int8.family("quant").values()) == {INT8}
        for point in (plain, int8):  # nothing else compressed
            assert not any(point.family("separable").values())
            assert {v for k, v in point.family("exits").items() if k != "criterion"} <= {"off"}


def test_spread_prunes_the_least_sensitive_layer_hardest(digits_space):
    knobs = [k for k in digits_space.knobs if k.family == "prune"]
    accuracies = {k.target: 0.5 + 0.1 * i for i, k in enumerate(knobs)}  # later layers less sensitive
    ratios = spread_by_sensitivity(knobs, accuracies, 0.4)
    ordered = [ratios[k.target] for k in knobs]
    assert ordered == sorted(ordered) and ordered[0] < 0.4 < ordered[-1]
    assert ordered[0] == pytest.approx(0.2) and ordered[-1] == pytest.approx(0.6)
    assert abs(sum(ordered) / len(ordered) - 0.4) < 0.05


def test_mixed_precision_keeps_sensitive_layers_at_8_bits(digits_space):
    knobs = [k for k in digits_space.knobs if k.family == "quant"]
    accuracies = {k.target: (0.99 if i % 2 else 0.5) for i, k in enumerate(knobs)}
    choice = mixed_precision(knobs, accuracies, teacher_accuracy=0.995)
    assert [choice[k.target] for k in knobs] == [INT4 if i % 2 else INT8 for i in range(len(knobs))]
    assert mixed_precision(knobs, {k.target: 0.3 for k in knobs}, teacher_accuracy=0.995) == {}


def test_starting_candidates_use_the_priors_and_stay_unique(digits_space):
    plain = starting_candidates(digits_space)
    knobs = [k for k in digits_space.knobs if k.family == "prune"]
    priors = {"teacher_accuracy": 0.99, "prune": {k.target: 0.9 - 0.1 * i for i, k in enumerate(knobs)},
              "quant": {k.target: 0.99 for k in digits_space.knobs if k.family == "quant"}}
    shaped = starting_candidates(digits_space, priors)
    assert len(shaped) == len(set(shaped)) > len(plain)
    assert set(plain) <= set(shaped)
    assert any(INT4 in point.family("quant").values() for point in shaped)
    assert shaped[-1] == digits_space.default_candidate()


def test_the_sensitivity_pass_is_skipped_when_the_warm_start_ends_before_its_points(digits_space):
    priors = {"teacher_accuracy": 0.99, "prune": {k.target: 0.5 for k in digits_space.knobs if k.family == "prune"},
              "quant": {}}
    plain, shaped = starting_candidates(digits_space), starting_candidates(digits_space, priors)
    lead = next(i for i, (a, b) in enumerate(zip(plain, shaped)) if a != b)  # where the shaped points begin
    assert not uses_sensitivity(digits_space, lead) and uses_sensitivity(digits_space, lead + 1)
