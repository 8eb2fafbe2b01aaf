"""The warm start: what a person tries first, and the hand baseline's points."""

import pytest

from slimsearch.config import SpaceConfig
from slimsearch.spaces import Space
from slimsearch.spaces.warm_start import BOLD_RATIO, HAND_RATIOS, INT8, hand_baseline, starting_candidates
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


def test_starting_candidates_lead_with_what_a_person_tries_first_and_stay_unique(digits_space):
    points = starting_candidates(digits_space)
    assert len(points) == len(set(points))
    first = points[0]
    assert set(first.family("prune").values()) == {0.5} and set(first.family("quant").values()) == {INT8}
    bold = points[1]  # then how far uniform compression goes
    assert set(bold.family("prune").values()) == {BOLD_RATIO} and set(bold.family("quant").values()) == {INT8}
    exits = [p for p in points[:4] if any(v != "off" for k, v in p.family("exits").items() if k != "criterion")]
    assert len(exits) == 2  # one cautious exit, then every exit with pruning
    assert points[4].family("quant") and set(points[4].family("quant").values()) == {INT8}
    assert not any(points[4].family("prune").values())
    assert set(hand_baseline(digits_space)) <= set(points)
    assert points[-1] == digits_space.default_candidate()
