"""The demo's closing line names the fastest front model near the teacher by its measured speed-up."""

from types import SimpleNamespace

import pandas as pd

from slimsearch.cli import _print_speedup


def test_the_fastest_is_the_highest_speed_up_not_the_fewest_milliseconds(capsys):
    # Each trial is timed against the teacher in its own window: the demo had a 4.30x model with
    # the lowest milliseconds beside a 4.40x one measured while the machine ran a little slower.
    front = pd.DataFrame({"trial": [22, 13, 16], "latency_ms": [0.075, 0.078, 0.069],
                          "speedup": [4.30, 4.40, 5.10], "test_accuracy": [0.9944, 0.9972, 0.8611]})
    _print_speedup(SimpleNamespace(front=front, teacher={"test_accuracy": 0.9972}))
    line = capsys.readouterr().out
    assert "trial 13, 4.40x faster" in line  # trial 16 is faster still, but 11 points short


def test_no_model_near_the_teacher_says_so(capsys):
    front = pd.DataFrame({"trial": [1], "latency_ms": [0.05], "speedup": [6.0], "test_accuracy": [0.80]})
    _print_speedup(SimpleNamespace(front=front, teacher={"test_accuracy": 0.99}))
    assert "no front model is within 2 points" in capsys.readouterr().out
