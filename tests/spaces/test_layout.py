"""The layout's figures, from shapes alone, against the same figures counted on built students."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from slimsearch.config import SpaceConfig
from slimsearch.evaluators.size import packed_size_bytes
from slimsearch.spaces import Space
from slimsearch.spaces.encoding import Encoding
from slimsearch.spaces.knobs import Choice
from slimsearch.spaces.layout import Layout
from slimsearch.tasks import create_task
from slimsearch.techniques import build_student


def random_rows(encoding: Encoding, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.repeat(encoding.default[None, :], count, axis=0)
    for row in rows:
        for column, knob in enumerate(encoding.knobs):
            if knob.family != "distill" and rng.random() < 0.5:
                domain = knob.domain
                row[column] = rng.integers(len(domain.options)) if isinstance(domain, Choice) else rng.uniform(domain.low, domain.high)
    return encoding.snap(rows)


def counted_macs(student, example_input) -> float:
    student.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if hasattr(student, "exit_logits"):
            student.exit_logits(example_input)
        else:
            student(example_input)
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
def test_macs_and_bytes_match_the_built_students(task_name):
    task = create_task(task_name)
    space = Space.discover(task.teacher, task.example_input, SpaceConfig())
    layout = Layout.discover(space, task.teacher, task.example_input, round_to=8)
    rows = random_rows(layout.encoding, 8, seed=1)
    features = layout.features(rows)
    for row, candidate, macs, size in zip(rows, layout.encoding.decode(rows), features["macs"], features["size_bytes"]):
        student = build_student(candidate, task.teacher, task.example_input)
        counted = counted_macs(student, task.example_input)
        heads = layout.features(row[None, :])["paths"][0, :-1, 1].sum() - 0  # exit prefixes count their heads
        assert macs == pytest.approx(counted, rel=0.01) or macs <= counted <= macs * 1.01 + heads
        assert size == pytest.approx(packed_size_bytes(student), rel=0.01)
    teacher = layout.teacher
    assert teacher["macs"][0] == pytest.approx(counted_macs(task.teacher, task.example_input))
    assert teacher["size_bytes"][0] == packed_size_bytes(task.teacher)


def test_keep_shares_are_the_channels_pruning_leaves():
    task = create_task("digits")
    space = Space.discover(task.teacher, task.example_input, SpaceConfig(families=("prune",)))
    layout = Layout.discover(space, task.teacher, task.example_input, round_to=8)
    encoding = layout.encoding
    row = encoding.default.copy()
    columns = encoding.columns("prune")
    row[columns] = [0.3, 0.5, 0.7, 0.2, 0.9, 0.45][:len(columns)]
    row = encoding.snap(row[None, :])[0]
    student = build_student(encoding.decode(row[None, :])[0], task.teacher, task.example_input)
    keep = layout.keep(row[None, :])
    modules = dict(student.named_modules())
    for column in columns:
        root = encoding.knobs[column].target
        teacher_channels = dict(task.teacher.named_modules())[root].out_channels
        assert modules[root].out_channels == round(keep[column][0] * teacher_channels)


def test_exit_paths_cost_less_than_the_whole_network():
    task = create_task("digits")
    space = Space.discover(task.teacher, task.example_input, SpaceConfig(families=("exits", "prune")))
    layout = Layout.discover(space, task.teacher, task.example_input, round_to=8)
    encoding = layout.encoding
    row = encoding.default.copy()
    for point in layout.exits:
        row[point.column] = 1  # the lowest threshold
    paths = layout.features(row[None, :])["paths"][0]
    macs = paths[:, 1] + paths[:, 3]  # float and depthwise work on each path
    assert np.all(np.diff(macs) > 0)  # later exits run more of the network; the end runs all of it
    assert layout.features(encoding.default[None, :])["exit_on"].sum() == 0
