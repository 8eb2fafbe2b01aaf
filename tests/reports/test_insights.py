"""Report data without a browser: hypervolume, knee, per-layer matrix, hypervolume history."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from slimsearch.reports.data import knob_lines, layer_matrix
from slimsearch.reports.insights import HV_REFERENCE, hypervolume_history, knee_trial, picks
from slimsearch.search.pareto import hypervolume


@pytest.mark.parametrize(("points", "reference", "expected"), [
    ([], (1, 1), 0.0),
    ([(0.5, 0.5)], (1, 1), 0.25),
    # Two boxes 0.8 x 0.4 overlapping in 0.4 x 0.4: 0.32 + 0.32 - 0.16.
    ([(0.2, 0.6), (0.6, 0.2)], (1, 1), 0.48),
    # A dominated point and one outside the reference add nothing.
    ([(0.2, 0.6), (0.6, 0.2), (0.7, 0.7), (1.5, 0.1)], (1, 1), 0.48),
    # On the reference's boundary: not strictly better, so no volume.
    ([(1.0, 0.0)], (1, 1), 0.0),
    ([(0.25,)], (1,), 0.75),
    ([(0.5, 0.5, 0.5)], (1, 1, 1), 0.125),
    # 0.5 + 0.25 - 0.125 (their intersection is 0.5 x 0.5 x 0.5).
    ([(0.0, 0.0, 0.5), (0.5, 0.5, 0.0)], (1, 1, 1), 0.625),
    # Three axis-aligned slabs of a unit cube: 1 - 0.5^3 by inclusion-exclusion.
    ([(0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.5)], (1, 1, 1), 0.875),
    ([(1.0, 2.0, 3.0)], (2, 4, 6), 1 * 2 * 3),
])
def test_hypervolume_hand_cases(points, reference, expected):
    assert hypervolume(points, reference) == pytest.approx(expected)


def test_hypervolume_rejects_points_of_the_wrong_dimension():
    with pytest.raises(ValueError, match="point=.*0.5"):
        hypervolume([(0.5, 0.5)], (1, 1, 1))


def _front(rows):
    return pd.DataFrame(rows, columns=["trial", "latency_ms", "accuracy"])


def test_knee_is_the_point_farthest_above_the_line_from_fastest_to_most_accurate():
    # After scaling to [0, 1]: (0, 0), (1/3, 0.89), (2/3, 0.96), (1, 1); trial 2 bulges most.
    front = _front([(1, 1.0, 0.50), (2, 2.0, 0.90), (3, 3.0, 0.93), (4, 4.0, 0.95)])
    assert knee_trial(front) == 2


def test_knee_ignores_points_dominated_in_latency_and_accuracy():
    # Trial 9 is on the 3-D front (say, smaller) but worse than trial 2 in both of these axes.
    front = _front([(1, 1.0, 0.50), (2, 2.0, 0.90), (9, 2.5, 0.60), (3, 3.0, 0.93), (4, 4.0, 0.95)])
    assert knee_trial(front) == 2


@pytest.mark.parametrize("rows", [
    [(1, 1.0, 0.5), (2, 2.0, 0.9)],                       # two points: no interior
    [(1, 1.0, 0.5), (2, 2.0, 0.6), (3, 3.0, 0.7)],        # a straight line: nothing bulges
    [(1, 1.0, 0.5), (2, 2.0, 0.55), (3, 3.0, 0.9)],       # concave: the middle is below the line
])
def test_no_knee_without_a_bulge(rows):
    assert knee_trial(_front(rows)) is None


def _candidate(**choices):
    return json.dumps({"version": 1, "choices": choices}, sort_keys=True)


def test_layer_matrix_is_generic_over_families():
    candidate = _candidate(
        prune={"conv1": 0.5, "conv2": 0.0},
        quant={"conv1": {"bits": 8, "mode": "uniform"}, "fc": {"bits": 4, "mode": "codebook"}},
        separable={"conv2": True},
        lowrank={"fc": 0.25},
        exits={"exit1": {"on": True, "threshold": 0.9}, "exit2": {"on": False, "threshold": 0.5}},
        distill={"temperature": 4.0, "alpha": 0.5},
        future={"conv1": [1, 2, 3]},  # a shape nobody taught the report
        flat=3,                      # not a per-layer mapping at all
    )
    trials = pd.DataFrame({"trial": [7, 8], "candidate": [candidate, None]})
    matrix = layer_matrix(trials).set_index(["family", "layer"])
    assert set(matrix["trial"]) == {7}, "a trial without a candidate adds no cells"
    assert "distill" not in matrix.index.get_level_values("family"), "distill is run-wide, not per layer"
    expected = {  # (family, layer): (value, strength, label)
        ("prune", "conv1"): (0.5, 0.5, "0.50"),
        ("prune", "conv2"): (0.0, 0.0, "0.00"),
        ("quant", "conv1"): (8.0, 0.75, "8b"),
        ("quant", "fc"): (4.0, 0.875, "4b codebook"),
        ("separable", "conv2"): (1.0, 1.0, "on"),
        ("lowrank", "fc"): (0.25, 0.75, "0.25"),
        ("exits", "exit1"): (0.9, 0.9, "on @0.90"),
        ("exits", "exit2"): (0.0, 0.0, "off"),
    }
    for key, (value, strength, label) in expected.items():
        cell = matrix.loc[key]
        assert (cell["value"], cell["strength"], cell["label"]) == pytest.approx((value, strength, label)), key
    unknown = matrix.loc[("future", "conv1")]
    assert pd.isna(unknown["value"]) and pd.isna(unknown["strength"]) and unknown["label"] == "[1, 2, 3]"


def test_knob_lines_read_each_family():
    lines = knob_lines(_candidate(prune={"a": 0.5, "b": 0.0}, quant={"a": {"bits": 8}, "b": {"bits": 32}},
                                  distill={"alpha": 0.5, "temperature": 4.0}))
    assert lines == ["distill: alpha 0.50, temperature 4.00", "prune: 1/2 layers changed; mean 0.25, max 0.50",
                     "quant: 1/2 layers changed; 8b ×1, 32b ×1"]
    assert knob_lines(None) == [] and knob_lines("not json") == []


TEACHER = {"val_accuracy": 1.0, "latency_ms": 2.0, "size_bytes": 1000, "test_accuracy": 1.0}


def _trials(rows):
    columns = ["trial", "state", "accuracy", "latency_ms", "teacher_latency_ms", "size_bytes", "feasible",
               "stopped_early"]
    return pd.DataFrame(rows, columns=columns)


def test_hypervolume_history_counts_only_feasible_fine_tuned_trials():
    trials = _trials([
        (0, "complete", 0.5, 1.0, 2.0, 500, True, None),        # (0.5, 0.5, 0.5): 0.125
        (1, "complete", 0.99, 1.9, 2.0, 900, False, None),      # over budget: ignored
        (2, "complete", 0.9, 0.5, 2.0, 100, False, "latency-first: ..."),  # stopped early: ignored
        (3, "fail", None, None, None, None, False, None),
        (4, "complete", 1.0, 1.0, 2.0, 500, True, None),        # (0, 0.5, 0.5): 0.25 dominates trial 0
    ])
    history = hypervolume_history(trials, TEACHER)
    assert history["trial"].tolist() == [0, 1, 2, 3, 4]
    assert history["hypervolume"].tolist() == pytest.approx([0.125, 0.125, 0.125, 0.125, 0.25])
    assert history["feasible_share"].tolist() == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.4])
    assert HV_REFERENCE == (1.0, 1.0, 1.0)


def test_picks_compare_against_the_teacher():
    front = pd.DataFrame({"trial": [3, 5], "accuracy": [0.9, 0.95], "test_accuracy": [0.88, math.nan],
                          "latency_ms": [0.5, 1.0], "teacher_latency_ms": [2.0, 2.0], "speedup": [4.0, 2.0],
                          "size_bytes": [250, 500], "candidate": [None, _candidate(prune={"a": 0.5})]})
    chosen = picks(front, TEACHER)
    best = chosen["recommended"]
    assert (best.trial, best.speedup, best.size_ratio, best.test_accuracy) == (5, 2.0, 2.0, None)
    assert best.accuracy_change == pytest.approx(-0.05)
    assert best.knobs == ("prune: 1/1 layers changed; mean 0.50, max 0.50",)
    assert chosen["knee"] is None, "two points have no knee"


def test_quant_choices_stored_as_strings_read_as_bit_widths():
    import json

    import pandas as pd

    from slimsearch.reports.data import knob_lines, layer_matrix

    candidate = json.dumps({"version": 1, "choices": {"quant": {"a": "8-uniform", "b": "2-kmeans", "c": "32-float"}}})
    matrix = layer_matrix(pd.DataFrame({"trial": [0], "candidate": [candidate]})).set_index("layer")
    assert matrix.loc["a", "value"] == 8 and matrix.loc["b", "label"] == "2b kmeans" and matrix.loc["c", "strength"] == 0
    assert knob_lines(candidate) == ["quant: 2/3 layers changed; 2b ×1, 8b ×1, 32b ×1"]


def test_predictor_errors_leave_long_fine_tunes_out():
    """A long fine-tune's 'prediction' is its own earlier measurement: counting it would flatter the predictors."""
    from slimsearch.reports.insights import predictor_errors

    rows = [  # (origin, predicted latency, first latency, predicted accuracy, accuracy)
        ("predictor", 0.30, 0.40, 0.95, 0.90), ("allocation", 0.50, 0.40, 0.97, 0.96),
        ("long_finetune", 0.40, 0.40, 0.93, 0.97), ("long_finetune", 0.25, 0.25, 0.99, 0.80)]
    trials = pd.DataFrame([{"origin": o, "predicted_latency_ratio": p, "first_latency_ratio": f, "predicted_accuracy": pa,
                            "accuracy": a, "state": "complete", "feasible": True, "stopped_early": None}
                           for o, p, f, pa, a in rows])
    errors = predictor_errors(trials)
    assert errors["latency_samples"] == 2 and errors["latency_mape"] == pytest.approx(0.25)
    assert errors["accuracy_samples"] == 2
