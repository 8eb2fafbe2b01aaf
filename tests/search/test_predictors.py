"""The latency and accuracy predictors, the Monte Carlo hypervolume gain, and their held-out errors."""

import numpy as np
import pytest

from slimsearch.config import SpaceConfig
from slimsearch.search.pareto import hypervolume, hypervolume_improvements
from slimsearch.search.predictors import (CACHE_BYTES, FAILED_LOSS, FIT_FEATURES, AccuracyPredictor, Damage,
                                          ExitShares, LatencyObservation, LatencyPredictor, TrialSeconds,
                                          first_exit_shares)
from slimsearch.spaces import Space
from slimsearch.spaces.genome import Genome
from slimsearch.spaces.layout import LATENCY_FEATURES, Layout
from slimsearch.tasks import create_task


@pytest.fixture(scope="module")
def layout():
    task = create_task("digits")
    space = Space.discover(task.teacher, task.example_input, SpaceConfig())
    return Layout.discover(space, task.teacher, task.example_input, round_to=8)


def genome_rows(layout, count, seed):
    genome = Genome(layout.encoding, None)
    return genome.random_rows(count, np.random.default_rng(seed))


def test_latency_predictor_recovers_a_latency_that_follows_its_features(layout):
    truth = LatencyPredictor(layout)
    truth.weights = np.array([0.05, 0.7, 0.25, 0.4, 0.1, 0.15, 0.05, 0.2, 0.02, 0.3, 0.1, 0.2, 0.03, 0.0])  # some machine's costs
    rows = genome_rows(layout, 80, seed=0)
    measured = truth.predict(rows, lower_bound=True)
    predictor = LatencyPredictor(layout).fit([LatencyObservation(r, m) for r, m in zip(rows[:60], measured[:60])])
    held_out = predictor.predict(rows[60:], lower_bound=True)
    assert np.median(np.abs(held_out / measured[60:] - 1)) < 0.05
    assert len(truth.weights) == len(FIT_FEATURES) == len(LATENCY_FEATURES) + 1


def test_weights_that_fit_in_the_cache_cost_nothing_more(layout):
    # Some machine where a fixed cost and the weight bytes beyond a 256 KiB cache are all there is
    # (digits' teacher holds 1.2 MB of float weights): a fit linear in the bytes measured on the
    # larger models predicts the smallest ones far too fast.
    truth = LatencyPredictor(layout)
    truth.cache_bytes = 2 ** 18
    truth.weights = np.zeros(len(FIT_FEATURES))
    truth.weights[FIT_FEATURES.index("graph")] = 0.05
    truth.weights[FIT_FEATURES.index("macs_float")] = 0.1
    truth.weights[FIT_FEATURES.index("weights_beyond_cache")] = 1.0
    encoding = layout.encoding
    rows = np.repeat(encoding.default[None, :], 19, axis=0)
    for row, ratio in zip(rows, np.linspace(0.0, 0.9, 19)):
        row[encoding.columns("prune")] = ratio
    measured = truth.predict(rows)
    fitted = LatencyPredictor(layout).fit([LatencyObservation(r, m) for r, m in zip(rows[::2], measured[::2])])
    assert fitted.cache_bytes == truth.cache_bytes and fitted.cache_bytes in CACHE_BYTES
    errors = np.abs(fitted.predict(rows[1::2]) / measured[1::2] - 1)
    # Without the cache: median 15%, the smallest models 31% too fast. The kink itself (0.075x) stays 22% off.
    assert np.median(errors) < 0.05 and np.all(errors[-3:] < 0.1)


def test_the_fit_learns_what_early_exit_models_cost_beside_one_graph_models(layout):
    # Exit models are timed as segments and a runner: on resnet18 the same layers cost ~0.7x.
    truth = LatencyPredictor(layout)
    truth.weights = LatencyPredictor(layout).prior
    truth.exit_factor = 0.7
    rows = genome_rows(layout, 120, seed=1)
    exits = layout.features(rows)["exit_on"].any(axis=1)
    assert 20 < exits.sum() < 100  # both kinds among the measured
    measured = truth.predict(rows, lower_bound=True)
    observations = [LatencyObservation(r, m) for r, m in zip(rows[:90], measured[:90])]
    predictor = LatencyPredictor(layout).fit(observations)
    assert predictor.exit_factor == pytest.approx(0.7, abs=0.03)
    held_out = predictor.predict(rows[90:], lower_bound=True)
    assert np.median(np.abs(held_out / measured[90:] - 1)) < 0.05
    # Without exit models among the measured, nothing says they differ: the factor stays 1.
    assert LatencyPredictor(layout).fit([o for o, e in zip(observations, exits) if not e]).exit_factor == 1.0


def test_precision_switches_count_the_borders_between_float_and_integer_layers(layout):
    encoding = layout.encoding
    switches = LATENCY_FEATURES.index("precision_switches")
    columns = encoding.columns("quant")
    int8 = encoding.knobs[columns[0]].domain.options.index("8-uniform")
    every, alternate = encoding.default.copy(), encoding.default.copy()
    every[columns] = int8
    alternate[columns[::2]] = int8
    paths = layout.features(np.vstack([encoding.default, every, alternate]))["paths"][:, -1]
    # None in float; one (the input's quantisation) with every layer int8; a border at every layer alternating.
    assert paths[0, switches] == 0 and 0 < paths[1, switches] < paths[2, switches]
    count = paths[:, LATENCY_FEATURES.index("switch_count")]
    assert count[0] == 0 and count[1] == 1 and count[2] == len(layout.layers)


def test_unfitted_latency_follows_work_and_exits_cost_less_at_their_lower_bound(layout):
    predictor = LatencyPredictor(layout)
    encoding = layout.encoding
    teacher = encoding.default[None, :]
    pruned = teacher.copy()
    pruned[0, encoding.columns("prune")] = 0.5
    assert predictor.predict(pruned)[0] < predictor.predict(teacher)[0]
    with_exit = teacher.copy()
    with_exit[0, layout.exits[0].column] = 1
    assert predictor.predict(with_exit, lower_bound=True)[0] < predictor.predict(with_exit)[0]
    assert first_exit_shares(layout.features(with_exit))[0, 0] == 1.0


def test_trial_seconds_learn_that_integer_layers_train_dearer_and_pruned_ones_cheaper(layout):
    seconds = TrialSeconds(layout)
    encoding = layout.encoding
    teacher = encoding.default.copy()
    pruned = teacher.copy()
    pruned[encoding.columns("prune")] = 0.5
    integer = teacher.copy()
    for column in encoding.columns("quant"):
        integer[column] = encoding.knobs[column].domain.options.index("8-uniform")
    examples = np.array([teacher, pruned, integer])
    unfitted = seconds.predict(examples)
    assert unfitted[1] < unfitted[0] < unfitted[2]  # the prior's shape, before any trial was timed
    rows = genome_rows(layout, 40, seed=3)
    # Some machine's costs: 1.5 s of fixed work, float work 3 s per teacher, integer work 7 s.
    truth = seconds.design(rows) @ np.array([1.5, 3.0, 7.0, 0.0])
    seconds.fit(rows[:30], truth[:30])
    assert np.median(np.abs(seconds.predict(rows[30:]) / truth[30:] - 1)) < 0.1
    cost = seconds.predict(examples)
    assert cost[1] < cost[0] < cost[2]
    # A machine where integer work is no dearer than float: a few trials tilt the prior that far.
    flat = seconds.design(rows) @ np.array([2.0, 4.0, 4.0, 0.0])
    seconds.fit(rows[:30], flat[:30])
    assert np.median(np.abs(seconds.predict(rows[30:]) / flat[30:] - 1)) < 0.1


def test_exit_shares_learn_how_many_samples_leave(layout):
    shares = ExitShares(layout)
    row = layout.encoding.default.copy()
    row[layout.exits[0].column] = 4  # threshold option 4
    for _ in range(20):
        shares.observe(row, np.array([0.8] + [0.0] * (len(layout.exits) - 1) + [0.2]))
    predicted = shares.predict(row[None, :])[0]
    assert predicted[0] == pytest.approx(0.8, abs=0.05) and predicted.sum() == pytest.approx(1.0)


def test_accuracy_falls_as_damage_grows_and_the_fit_follows_the_trials(layout):
    sensitivity = {"teacher_accuracy": 0.99, "probes": {"prune": {layout.encoding.knobs[c].target: {"0.5": 0.6}
                                                                 for c in layout.encoding.columns("prune")}}}
    damage = Damage(layout, sensitivity)
    predictor = AccuracyPredictor(damage, 0.99)
    encoding = layout.encoding
    rows = np.repeat(encoding.default[None, :], 5, axis=0)
    for i, ratio in enumerate([0.0, 0.3, 0.5, 0.7, 0.85]):
        rows[i, encoding.columns("prune")] = ratio
    predicted = predictor.predict(rows)
    assert np.all(np.diff(predicted) < 0) and predicted[0] == pytest.approx(0.99)
    measured = np.array([0.99, 0.98, 0.95, 0.85, 0.3])  # a task harder to prune than the prior's
    fitted = AccuracyPredictor(damage, 0.99).fit(rows, measured).predict(rows)
    # The last lost more than FAILED_LOSS: the fit learns that it failed, not by how much.
    assert np.abs(fitted - measured)[:4].mean() < np.abs(predicted - measured)[:4].mean()
    assert fitted[-1] < 0.99 * (1 - FAILED_LOSS) + 0.01


def test_a_failure_counts_near_itself_not_in_the_terms(layout):
    encoding = layout.encoding
    rows = np.repeat(encoding.default[None, :], 4, axis=0)
    for i, ratio in enumerate([0.2, 0.4, 0.5, 0.6]):
        rows[i, encoding.columns("prune")] = ratio
    damage = Damage(layout, {"teacher_accuracy": 0.99})
    near_chance = AccuracyPredictor(damage, 0.99).fit(rows, np.array([0.99, 0.985, 0.98, 0.1]))
    just_failed = AccuracyPredictor(damage, 0.99).fit(rows, np.array([0.99, 0.985, 0.98, 0.7]))
    assert near_chance.coefficients == pytest.approx(just_failed.coefficients)
    # The terms are those of the models that fine-tuned; the failure still counts where it was.
    without = AccuracyPredictor(damage, 0.99).fit(rows[:3], np.array([0.99, 0.985, 0.98]))
    assert near_chance.coefficients == pytest.approx(without.coefficients)
    assert near_chance.predict(rows[3:])[0] < without.predict(rows[3:])[0] - 0.1
    counted_in_full = AccuracyPredictor(damage, 0.99).fit(rows, np.array([0.99, 0.985, 0.98, 0.8]))
    assert counted_in_full.coefficients[0] > just_failed.coefficients[0]  # 19% down: fine-tuned, counted in full


def test_one_sensitive_group_does_not_make_uniform_pruning_look_worse(layout):
    encoding = layout.encoding
    groups = [encoding.knobs[c].target for c in encoding.columns("prune")]
    flat = Damage(layout, {"teacher_accuracy": 0.99, "probes": {"prune": {g: {"0.5": 0.5} for g in groups}}})
    skewed = Damage(layout, {"teacher_accuracy": 0.99, "probes": {"prune": {
        g: {"0.5": 0.1 if i == 0 else 0.9} for i, g in enumerate(groups)}}})  # accuracies: the first group hurts most
    uniform = encoding.default.copy()
    uniform[encoding.columns("prune")] = 0.7
    (skewed_mean, skewed_peak), (flat_mean, flat_peak) = (d.features(uniform[None, :])[0, :2] for d in (skewed, flat))
    assert skewed_peak <= flat_peak + 1e-9 and skewed_mean == pytest.approx(flat_mean, rel=0.05)  # groups round differently
    # Cut hard where the probes said it hurts most, the same pruning costs more than where it hurts least.
    sensitive, insensitive = encoding.default.copy(), encoding.default.copy()
    sensitive[encoding.columns("prune")[0]] = 0.8
    insensitive[encoding.columns("prune")[1]] = 0.8
    assert skewed.features(sensitive[None, :])[0, 0] > skewed.features(insensitive[None, :])[0, 0]


def test_a_measured_miss_carries_over_to_near_twins_and_fades_far_away(layout):
    sensitivity = {"teacher_accuracy": 0.99, "probes": {"prune": {layout.encoding.knobs[c].target: {"0.5": 0.6}
                                                                 for c in layout.encoding.columns("prune")}}}
    encoding = layout.encoding
    rows = np.repeat(encoding.default[None, :], 4, axis=0)
    for i, ratio in enumerate([0.0, 0.2, 0.4, 0.6]):
        rows[i, encoding.columns("prune")] = ratio
    predictor = AccuracyPredictor(Damage(layout, sensitivity), 0.99)
    expected = predictor.predict(rows)
    # The last candidate fine-tuned far worse than the additive model says; the others as it says.
    measured = expected.copy()
    measured[-1] = expected[-1] - 0.3
    fitted = AccuracyPredictor(Damage(layout, sensitivity), 0.99).fit(rows, measured)
    twin = rows[-1].copy()
    twin[encoding.columns("prune")[0]] = 0.65  # one group a step further: nearly the same candidate
    assert fitted.predict(twin[None, :])[0] < expected[-1] - 0.1
    assert fitted.predict(rows[:1])[0] == pytest.approx(0.99, abs=0.02)  # the teacher's side is unchanged


def test_hypervolume_gain_estimates_follow_the_exact_volume():
    front = np.array([[0.02, -0.5, -0.5], [0.05, -0.8, -0.3]])
    reference = np.array([0.1, 0.0, 0.0])
    candidates = np.array([[0.03, -0.6, -0.6], [0.06, -0.9, -0.35], [0.05, -0.4, -0.2], [0.01, -0.2, -0.1]])
    gains = hypervolume_improvements(front, candidates, reference, samples=100000)
    exact = [hypervolume(np.vstack([front, c]).tolist(), reference) - hypervolume(front.tolist(), reference)
             for c in candidates]
    assert gains[2] == 0.0  # dominated by the front
    assert np.allclose(gains, exact, atol=2e-4)
    assert list(np.argsort(gains)) == list(np.argsort(exact))


def test_trials_at_small_damage_do_not_set_what_heavy_cuts_cost(layout):
    encoding = layout.encoding
    rows = np.repeat(encoding.default[None, :], 4, axis=0)
    for i, ratio in enumerate([0.1, 0.2, 0.3, 0.6]):
        rows[i, encoding.columns("prune")] = ratio
    predictor = AccuracyPredictor(Damage(layout, {"teacher_accuracy": 0.99}), 0.99)
    prior = predictor.predict(rows[3:])[0]
    # A point or two lost at light pruning (fine-tuning noise as much as pruning) ...
    predictor.fit(rows[:3], np.array([0.98, 0.975, 0.97]))
    # ... does not make a cut the search has not measured look like a failure.
    assert predictor.predict(rows[3:])[0] > prior - 0.05 > 0.9
