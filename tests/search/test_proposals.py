"""The proposers and the engine that takes turns between them, on a study whose trials are
written with known outcomes (what a real search records), so the choices can be checked."""

import numpy as np
import optuna
import pytest

from slimsearch.config import SearchConfig
from slimsearch.search.fidelity import SCREEN_ATTR
from slimsearch.search.origins import (ALLOCATION, FINETUNE_SCALE_ATTR, LONG_FINETUNE, PREDICTED_ATTR, PREDICTOR, QUEUED,
                                      SAMPLER, WARM_START)
from slimsearch.search.proposals import create_engine
from slimsearch.search.proposals.allocation import HALF_BITS
from slimsearch.search.proposals.base import History, Proposal
from slimsearch.search.proposals.engine import SCHEDULE
from slimsearch.search.proposals.knowledge import FAILURE_MARGIN
from slimsearch.search.proposals.warm_start import warm_start_limit
from slimsearch.search.samplers import ProposalSampler
from slimsearch.spaces import Space
from slimsearch.spaces.optuna_adapter import space_distributions, suggest_candidate
from slimsearch.tasks import create_task

TEACHER = {"latency_ms": 1.0, "val_accuracy": 0.99, "size_bytes": 1_237_000}


@pytest.fixture(scope="module")
def setup():
    task = create_task("digits")
    config = SearchConfig.from_mapping({"latency_budget": "0.6x", "trials": 40})
    space = Space.discover(task.teacher, task.example_input, config.space)
    probes = {"prune": {k.target: {"0.5": 0.9 - 0.05 * i} for i, k in enumerate(space.knobs) if k.family == "prune"},
              "quant": {k.target: {'"2-uniform"': 0.98} for k in space.knobs if k.family == "quant"}}
    priors = {"sensitivity": {"teacher_accuracy": 0.99, "probes": probes}, "latency_probes": []}
    return task, config, space, priors


def engine_for(setup, **settings):
    task, config, space, priors = setup
    config = SearchConfig.from_mapping(settings, base=config)
    return create_engine(config, space, task, priors, TEACHER, seed=0), space


def record(study, space, engine, proposal, accuracy=None, latency_ratio=None, screened_out=False):
    """Write the proposal as a finished trial, its outcome what the predictors expect of it (or
    `accuracy`, `latency_ratio`); `screened_out`: stopped after its short fine-tune at that accuracy."""
    knowledge = engine.knowledge
    row = engine.encoding.encode([proposal.candidate])
    predicted = knowledge.predict(row)
    ratio = float(predicted.latency_ratio[0]) if latency_ratio is None else latency_ratio
    attrs = {"candidate": proposal.candidate.to_dict(), "origin": proposal.origin, "stopped_early": None,
             "teacher_latency_ms": TEACHER["latency_ms"], "first_latency_ratio": ratio,
             "feasible": ratio <= 0.6, "violation": ratio / 0.6 - 1, "genome": proposal.genome}
    if proposal.finetune_scale != 1.0:
        attrs[FINETUNE_SCALE_ATTR] = proposal.finetune_scale
    if screened_out:
        attrs["stopped_early"] = "multi-fidelity: after 1 of 3 fine-tuning epochs another candidate was better"
        attrs[SCREEN_ATTR] = {"epochs": 1.0, "accuracy": accuracy, "promoted": False}
    if proposal.predicted:
        attrs[PREDICTED_ATTR] = proposal.predicted
    study.add_trial(optuna.trial.create_trial(
        params=space.params(proposal.candidate), distributions=space_distributions(space),
        values=[float(predicted.accuracy[0]) if accuracy is None else accuracy, ratio * TEACHER["latency_ms"], float(predicted.size_bytes[0])],
        user_attrs=attrs))


def test_warm_start_first_then_the_proposers_in_turn_never_twice(setup):
    engine, space = engine_for(setup, proposers=["sampler", "predictor", "allocation"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    origins, keys = [], []
    for _ in range(16):
        proposal = engine.propose(study.get_trials(deepcopy=False))
        assert proposal is not None
        origins.append(proposal.origin)
        keys.append(proposal.candidate.key)
        record(study, space, engine, proposal)
    warm = warm_start_limit(40)
    assert origins[:warm] == [WARM_START] * warm and WARM_START not in origins[warm:]
    assert len(set(keys)) == len(keys)
    later = origins[warm:]
    assert set(later) == {ALLOCATION, PREDICTOR, SAMPLER}
    schedule = [origin for origin in SCHEDULE if origin != LONG_FINETUNE]
    assert later[:len(schedule)] == schedule  # the sampler's turn last (then it answers when the others pass)
    assert engine.last_seconds < 5


def test_allocation_meets_its_latency_targets_with_less_as_targets_tighten(setup):
    engine, _ = engine_for(setup)
    allocation = engine.proposers[ALLOCATION]
    knowledge = engine.knowledge
    rows = [allocation.allocate(target, floor=None) for target in (0.6, 0.4, 0.25)]
    predicted = knowledge.predict(np.array(rows))
    assert np.all(predicted.latency_ratio <= np.array([0.6, 0.4, 0.25]) + 1e-9)
    assert np.all(np.diff(predicted.accuracy) <= 1e-12)  # tighter targets cost accuracy
    shrunk = allocation.allocate(0.6, floor=2)
    assert knowledge.predict(shrunk[None, :]).size_bytes[0] < predicted.size_bytes[0]
    assert knowledge.predict(shrunk[None, :]).latency_ratio[0] <= 0.6 * 1.01


def test_the_allocations_walks_may_take_every_float_layer_to_int8_in_one_step(setup):
    """One layer at int8 adds a quantize and a dequantize around it; on a small network that costs
    more than its kernel saves, so only the whole model at once reaches the int8 models."""
    engine, _ = engine_for(setup)
    allocation = engine.proposers[ALLOCATION]
    encoding = engine.encoding
    quant = encoding.columns("quant")
    int8 = [encoding.knobs[c].domain.options.index("8-uniform") for c in quant]
    moves = allocation._moves(encoding.default, speed=True, floor=None)
    whole = [m for m in moves if np.array_equal(m[quant], int8)]
    assert len(whole) == 1 and np.array_equal(np.delete(whole[0], quant), np.delete(encoding.default, quant))
    kept = allocation._moves(encoding.default, speed=True, floor=None, precision=False)
    assert not any(np.any(m[quant] != encoding.default[quant]) for m in kept)  # the walks that keep float


def test_the_walks_that_keep_float_shrink_to_float16_weights_and_no_lower(setup):
    """float16 weights deploy at float's speed in half the bytes, and fine-tune as cheaply; integer
    widths need fake quantization, which the walks that keep float exist to avoid."""
    engine, _ = engine_for(setup)
    allocation = engine.proposers[ALLOCATION]
    encoding = engine.encoding
    quant = encoding.columns("quant")
    half = [encoding.knobs[c].domain.options.index("16-float") for c in quant]
    shrunk = allocation._shrink(encoding.default, HALF_BITS)
    assert np.array_equal(shrunk[quant], half)  # every layer: predicted free in accuracy and latency
    assert np.array_equal(np.delete(shrunk, quant), np.delete(encoding.default, quant))
    sizes = engine.knowledge.predict(np.array([encoding.default, shrunk])).size_bytes
    assert sizes[1] < 0.6 * sizes[0]


def test_the_allocation_takes_each_aim_once_start_target_and_floor(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["allocation"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    aims = []
    for _ in range(6):
        proposal = engine.propose(study.get_trials(deepcopy=False))
        if proposal is None or proposal.origin != ALLOCATION:
            break
        aims.append((proposal.predicted["start"], round(proposal.predicted["target_ratio"], 4), proposal.predicted["floor"]))
        record(study, space, engine, proposal)
    assert len(aims) >= 3 and len(set(aims)) == len(aims)


def test_the_predictor_proposes_within_the_budget_what_adds_to_the_front(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["predictor"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(5):
        proposal = engine.propose(study.get_trials(deepcopy=False))
        assert proposal.origin == PREDICTOR
        assert proposal.predicted["latency_ratio"] <= 0.6
        assert proposal.predicted["accuracy"] > 0.9
        record(study, space, engine, proposal)


def test_the_predictor_weighs_what_a_candidate_adds_by_what_its_trial_costs(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["predictor"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(3):
        record(study, space, engine, engine.propose(study.get_trials(deepcopy=False)))
    history = engine._history(study.get_trials(deepcopy=False))
    engine.knowledge.refit(history)
    seconds = engine.knowledge.seconds
    integer_share = {}
    # One machine where integer layers train a hundred times dearer than float ones, one the other
    # way round (the allocation ranks its walks' ends by the same Knowledge.best_per_second).
    for name, weights in (("integer dear", [1.0, 0.01, 100.0, 0.0]), ("float dear", [1.0, 100.0, 0.01, 0.0])):
        seconds.weights = np.array(weights)
        proposal = engine.proposers[PREDICTOR].propose(history, np.random.default_rng(0))
        assert proposal is not None
        design = seconds.design(engine.encoding.encode([proposal.candidate]))[0]
        integer_share[name] = design[2] / max(design[1] + design[2], 1e-9)
    assert integer_share["integer dear"] < integer_share["float dear"]


def test_only_the_sampler_over_every_knob_is_what_random_search_was(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["sampler"], parametrisation="layer",
                               sampler="random")
    assert engine.knowledge is None
    proposal = engine.propose([])
    assert proposal.origin == SAMPLER and proposal.genome is None


def test_the_sampler_records_origins_and_keeps_queued_trials_as_they_are(setup):
    engine, space = engine_for(setup)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                sampler=ProposalSampler(engine, space, seed=0))
    queued = space.default_candidate()
    study.enqueue_trial(space.params(queued))
    first = study.ask()
    assert suggest_candidate(first, space) == queued
    assert study.get_trials()[0].user_attrs["origin"] == QUEUED
    second = study.ask()
    candidate = suggest_candidate(second, space)
    attrs = study.get_trials()[1].user_attrs
    assert attrs["origin"] == WARM_START and candidate != queued
    assert attrs["proposal_seconds"] >= 0


def test_predictor_and_allocation_stay_inside_the_trust_region_that_accurate_models_widen(setup):
    from slimsearch.search.proposals.trust import TRUST_LATENCY_STEP, TRUST_SIZE_STEP

    engine, space = engine_for(setup, warm_start=False, proposers=["predictor", "allocation"])
    knowledge = engine.knowledge
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    history = engine._history(study.get_trials(deepcopy=False))
    assert floors(knowledge, history) == pytest.approx((0.6 * TRUST_LATENCY_STEP, TRUST_SIZE_STEP))  # budget, teacher
    for _ in range(4):
        history = engine._history(study.get_trials(deepcopy=False))
        anchored = bool(knowledge.accurate(history))
        latency_floor, size_floor = floors(knowledge, history)
        proposal = engine.propose(study.get_trials(deepcopy=False))
        predicted = proposal.predicted
        if anchored or proposal.origin == PREDICTOR:  # an allocation before any accurate model: no floors
            assert predicted["latency_ratio"] >= latency_floor
            assert predicted["size_bytes"] / knowledge.teacher_size >= size_floor
        record(study, space, engine, proposal)
    # Each accurate fine-tuned model widens the region to a step past it.
    history = engine._history(study.get_trials(deepcopy=False))
    fastest = min(r.latency_ratio for r in history.fine_tuned())
    smallest = min(r.size_bytes for r in history.fine_tuned()) / knowledge.teacher_size
    assert floors(knowledge, history) == pytest.approx((min(fastest, 0.6) * TRUST_LATENCY_STEP,
                                                       min(smallest, 1.0) * TRUST_SIZE_STEP))


def floors(knowledge, history):
    region = knowledge.trust_region(history)
    return region.latency_floor, region.size_floor


def test_a_proposer_that_raises_is_skipped_with_a_warning_and_the_next_one_proposes(setup):
    engine, _ = engine_for(setup, warm_start=False)

    class Broken:
        def propose(self, history, rng):
            raise IndexError("index 0 is out of bounds")

    engine.proposers[ALLOCATION] = Broken()
    with pytest.warns(RuntimeWarning, match="the allocation proposer failed .*IndexError"):
        proposal = engine.propose([])
    assert proposal is not None and proposal.origin != ALLOCATION


def test_a_passed_turn_goes_to_the_model_guided_proposers_before_the_sampler(setup):
    engine, _ = engine_for(setup, warm_start=False)

    class NothingToAdd:
        def propose(self, history, rng):
            return None

    engine.proposers[PREDICTOR] = NothingToAdd()
    engine.schedule = (PREDICTOR, SAMPLER, ALLOCATION)  # the sampler next in turn, yet the allocation answers
    assert engine.propose([]).origin == ALLOCATION


def test_no_proposal_is_as_fast_and_as_small_as_a_model_that_fine_tuned_badly(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["predictor"])
    knowledge = engine.knowledge
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    measured = engine.encoding.default.copy()
    measured[engine.encoding.columns("prune")] = 0.25  # an accurate model first: the region widens
    record(study, space, engine, Proposal(engine.encoding.decode(measured[None, :])[0], WARM_START))
    proposal = engine.propose(study.get_trials(deepcopy=False))
    # What the predictor expected, it did not get: the model lost half its accuracy.
    record(study, space, engine, proposal, accuracy=0.5)
    history = engine._history(study.get_trials(deepcopy=False))
    (failed_latency, failed_size), = knowledge.trust_region(history).failures
    proposals = [engine.propose(study.get_trials(deepcopy=False)) for _ in range(3)]
    assert all(proposals)  # the region is wide enough for others
    predicted = knowledge.predict(engine.encoding.encode([proposal.candidate for proposal in proposals]))
    margin = FAILURE_MARGIN  # nor nearly as fast and as small
    assert not np.any((predicted.latency_ratio <= failed_latency * margin)
                      & (predicted.size_bytes / knowledge.teacher_size <= failed_size * margin))


def test_each_knob_moves_only_a_step_past_what_one_accurate_model_took(setup):
    from slimsearch.search.proposals.trust import PRUNE_STEP, TRUST_LOSS

    engine, space = engine_for(setup, warm_start=False)
    knowledge = engine.knowledge
    levels = knowledge.levels
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    first = knowledge.trust_region(engine._history([])).limits
    # From the teacher: pruning up to PRUNE_STEP, one bit-width step (8 bits), one separable conv.
    assert np.allclose(first.prune, PRUNE_STEP) and np.all(first.widths == 1)
    assert list(first.separable) == [1] and list(first.lowrank) == [1]
    for _ in range(8):
        history = engine._history(study.get_trials(deepcopy=False))
        limits = knowledge.trust_region(history).limits
        anchored = bool(knowledge.accurate(history))
        proposal = engine.propose(study.get_trials(deepcopy=False))
        # The sampler explores outside the region; the allocation walks as far as the budget
        # before any accurate model anchors it.
        if proposal.origin == PREDICTOR or (proposal.origin == ALLOCATION and anchored):
            assert levels.within(engine.encoding.encode([proposal.candidate]), limits)[0]
        record(study, space, engine, proposal)
    history = engine._history(study.get_trials(deepcopy=False))
    rows = np.array([r.row for r in history.fine_tuned() if r.accuracy >= 0.99 * (1 - TRUST_LOSS)])
    prune, widths, separable, _ = levels.levels(rows)
    limits = knowledge.trust_region(history).limits  # the teacher's neighbourhood, then one per accurate model
    assert np.allclose(limits.prune[1:], prune + PRUNE_STEP)
    assert np.all(limits.widths[1:] == widths + 1) and np.all(limits.separable[1:] == separable + 1)
    assert levels.within(rows, limits).all()


def test_before_any_accurate_model_the_allocation_walks_past_the_teachers_neighbourhood(setup):
    """A step from the teacher may not reach the budget (on mnist1d, pruning by 0.25 with int8 was
    measured at 0.86x against 0.75x): without a warm start, the first allocation must go as far
    as its walk needs, and aim where a model adds most, not at the budget's edge."""
    engine, space = engine_for(setup, warm_start=False, proposers=["allocation"])
    knowledge = engine.knowledge
    history = engine._history([])
    teachers = knowledge.trust_region(history).limits
    region = knowledge.trust_region(history, open_start=True)
    assert region.open and region.limits is None and region.size_floor == 0 and region.latency_floor == pytest.approx(0.6 * 0.6)  # the walks' targets' floor
    # The teacher's neighbourhood cannot reach half the budget by the latency predictor; the open walk does.
    allocation = engine.proposers[ALLOCATION]
    assert 0.3 not in allocation._speed_path(engine.encoding.default, [0.3], teachers)
    proposal = engine.propose([])
    assert proposal.origin == ALLOCATION
    assert proposal.predicted["target_ratio"] < 0.6  # not the budget itself: little to add there
    assert not knowledge.levels.within(engine.encoding.encode([proposal.candidate]), teachers)[0]
    # Once an accurate model anchors the region, the knob limits hold again.
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    record(study, space, engine, proposal, accuracy=0.99)
    anchored = knowledge.trust_region(engine._history(study.get_trials(deepcopy=False)), open_start=True)
    assert not anchored.open and anchored.limits is not None


def test_with_no_front_yet_gains_rank_points_by_what_each_would_add(setup):
    engine, _ = engine_for(setup, warm_start=False)
    knowledge = engine.knowledge
    reference = knowledge.reference  # loss 0.1, log10 of the budget ratio, log10 size ratio 0
    big = reference - [0.09, 0.3, 1.0]
    small = reference - [0.01, 0.01, 0.1]
    outside = reference + [0.01, 0.0, 0.0]
    gains = knowledge.expected_gains(engine._history([]), np.array([small, big, outside]), np.random.default_rng(0))
    assert gains[1] == pytest.approx(1.0) and 0 < gains[0] < 0.01 and gains[2] == 0
    assert list(knowledge.worth_a_trial(gains)) == [False, True, False]


def test_the_trust_region_is_a_union_of_neighbourhoods_not_a_box_around_them(setup):
    engine, _ = engine_for(setup, warm_start=False)
    encoding, levels = engine.encoding, engine.knowledge.levels
    prune, quant = encoding.columns("prune"), encoding.columns("quant")
    pruned = encoding.default.copy()
    pruned[prune] = 0.5  # one accurate model pruned every group by half
    quantized = encoding.default.copy()
    two_bits = [encoding.knobs[c].domain.options.index("2-uniform") for c in quant]
    four_bits = [encoding.knobs[c].domain.options.index("4-uniform") for c in quant]
    quantized[quant] = four_bits  # another kept every layer at 4 bits
    limits = levels.limits(np.array([pruned, quantized]))
    a_step_past_each = np.array([pruned, quantized])
    a_step_past_each[0, prune] = 0.75
    a_step_past_each[1, quant] = two_bits
    assert levels.within(a_step_past_each, limits).all()
    both = pruned.copy()
    both[quant] = four_bits  # half the channels and 4 bits together: neither model showed that survives
    assert not levels.within(both[None, :], limits)[0]


def test_the_latency_fit_is_anchored_at_the_teacher_whose_ratio_is_one_by_definition(setup):
    engine, _ = engine_for(setup, warm_start=False)
    knowledge = engine.knowledge
    anchor, *_ = knowledge.latency_observations(engine._history([]))
    assert anchor.ratio == 1.0 and np.array_equal(anchor.row, engine.encoding.default)
    knowledge.refit(engine._history([]))
    assert knowledge.predict(engine.encoding.default[None, :]).latency_ratio[0] == pytest.approx(1.0, rel=0.15)


def test_the_allocation_walks_on_from_accurate_front_models_and_never_proposes_what_the_front_beats(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["allocation"])
    allocation, knowledge, encoding = engine.proposers[ALLOCATION], engine.knowledge, engine.encoding
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    # An accurate model measured: every prune group at half, as the warm start's first point.
    half = encoding.default.copy()
    half[encoding.columns("prune")] = 0.5
    record(study, space, engine, Proposal(encoding.decode(half[None, :])[0], WARM_START))
    history = engine._history(study.get_trials(deepcopy=False))
    (start,) = allocation._front_starts(history)
    assert start.number == 0
    start_ratio = knowledge.predict(half[None, :]).latency_ratio[0]
    target = 0.7 * start_ratio
    walked = allocation._speed_path(half, [target], knowledge.trust_region(history).limits)[target]
    prune = encoding.columns("prune")
    assert np.all(walked[prune] >= half[prune]) and knowledge.predict(walked[None, :]).latency_ratio[0] <= target
    # A model no allocation can beat (as accurate as the teacher, a twentieth of its latency and
    # a hundredth of its bytes): the allocation passes rather than propose a dominated candidate.
    trial = study.get_trials()[0]
    engine, _ = engine_for(setup, warm_start=False, proposers=["allocation"])  # the engine keeps its study's trials
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(optuna.trial.create_trial(
        params=trial.params, distributions=trial.distributions,
        values=[0.99, 0.05 * TEACHER["latency_ms"], TEACHER["size_bytes"] / 100],
        user_attrs={**trial.user_attrs, "first_latency_ratio": 0.05, "feasible": True, "violation": 0.05 / 0.6 - 1}))
    history = engine._history(study.get_trials(deepcopy=False))
    assert engine.proposers[ALLOCATION].propose(history, np.random.default_rng(0)) is None


def test_failures_rule_out_only_what_no_accurate_model_has_disproved_inside_the_region(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["predictor"])
    knowledge, encoding = engine.knowledge, engine.encoding
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    # Every layer at 2 bits: a failure far outside the region (a step past the teacher), which
    # says nothing of how far the region's own kind of compression goes.
    quant = encoding.columns("quant")
    two_bits = encoding.default.copy()
    two_bits[quant] = [encoding.knobs[c].domain.options.index("2-uniform") for c in quant]
    record(study, space, engine, Proposal(encoding.decode(two_bits[None, :])[0], SAMPLER), accuracy=0.3)
    assert len(knowledge.trust_region(engine._history(study.get_trials(deepcopy=False))).failures) == 0
    # Inside the region it counts, until an accurate model is measured faster and smaller than it.
    inside = encoding.default.copy()
    inside[encoding.columns("prune")] = 0.2
    record(study, space, engine, Proposal(encoding.decode(inside[None, :])[0], PREDICTOR), accuracy=0.3)
    assert len(knowledge.trust_region(engine._history(study.get_trials(deepcopy=False))).failures) == 1
    further = inside.copy()
    further[encoding.columns("prune")] = 0.25
    record(study, space, engine, Proposal(encoding.decode(further[None, :])[0], PREDICTOR), accuracy=0.99)
    assert len(knowledge.trust_region(engine._history(study.get_trials(deepcopy=False))).failures) == 0


def long_finetune_study(setup):
    """An engine with the long fine-tune proposer alone, an empty study, the proposer, and the
    study's history as a function."""
    engine, space = engine_for(setup, warm_start=False, proposers=["long_finetune"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    return engine, space, study, engine.proposers[LONG_FINETUNE], lambda: engine._history(study.get_trials(deepcopy=False))


def test_a_long_fine_tune_goes_to_the_measured_model_that_would_add_most_if_it_recovered(setup):
    engine, space, study, long, history = long_finetune_study(setup)
    rng = np.random.default_rng(0)
    assert long.propose(history(), rng) is None  # nothing measured yet
    knobs, rows = engine.encoding.knobs, []
    for ratio in (0.2, 0.5, 0.8, 0.4, 0.6):  # uniform pruning, as the hand grid would
        row = engine.encoding.default.copy()
        for column in engine.encoding.columns("prune"):
            row[column] = min(ratio, knobs[column].domain.high)
        rows.append(row)
    candidates = engine.encoding.decode(np.array(rows))
    # Slow and accurate, middling, and fast but short of the teacher (0.99): none expected within a point of it.
    for candidate, accuracy, latency in zip(candidates, (0.988, 0.94, 0.90), (0.55, 0.35, 0.15)):
        record(study, space, engine, Proposal(candidate, SAMPLER), accuracy=accuracy, latency_ratio=latency)
    proposal = long.propose(history(), rng)
    assert proposal is not None and proposal.origin == LONG_FINETUNE and proposal.finetune_scale == 5.0  # the default
    assert proposal.candidate.key == candidates[2].key  # most to win: the fast one, if it recovers
    assert proposal.predicted["accuracy"] == pytest.approx(0.90 + 0.75 * (0.99 - 0.90))
    assert proposal.predicted["extends"] == 2 and proposal.predicted["latency_ratio"] == 0.15

    # Measured: it won back 80% of its loss; the next expectation leans that way, and a candidate
    # is never given a second long fine-tune.
    record(study, space, engine, proposal, accuracy=0.90 + 0.8 * 0.09, latency_ratio=0.15)
    assert long.recovery(history()) == pytest.approx((0.75 * 2 + 0.8) / 3)
    second = long.propose(history(), rng)
    assert second is None or second.candidate.key != candidates[2].key
    # The accuracy model learns what the configured fine-tune reaches: long ones stay out of its fit.
    assert len(history().trained(standard=True)) == 3 and len(history().trained()) == 4

    # One expected to become the fastest model within a point of the teacher goes first, whatever
    # a fast, lossy one would add to the hypervolume: that is the model people pick.
    record(study, space, engine, Proposal(candidates[3], SAMPLER), accuracy=0.978, latency_ratio=0.30)
    record(study, space, engine, Proposal(candidates[4], SAMPLER), accuracy=0.85, latency_ratio=0.08)
    third = long.propose(history(), rng)
    assert third is not None and third.candidate.key == candidates[3].key


def test_a_model_that_could_be_the_fastest_near_the_teacher_at_the_best_recovery_measured_gets_a_long_fine_tune(setup):
    engine, space, study, long, history = long_finetune_study(setup)
    rng = np.random.default_rng(0)
    first = Proposal(candidate_with_prune(engine, 0.5), SAMPLER)
    record(study, space, engine, first, accuracy=0.90, latency_ratio=0.15)
    record(study, space, engine, long.propose(history(), rng), accuracy=0.99, latency_ratio=0.15)  # won back everything
    # Faster still, at 0.92: the typical share expected so far leaves it short of 0.98, the best one measured does not.
    bold = candidate_with_prune(engine, 0.7)
    record(study, space, engine, Proposal(bold, SAMPLER), accuracy=0.92, latency_ratio=0.10)
    recovery = long.recovery(history())
    assert 0.92 + recovery * 0.07 < 0.98 and long.recovered_shares(history()) == [1.0]
    proposal = long.propose(history(), rng)
    assert proposal is not None and proposal.candidate.key == bold.key


def test_the_first_long_fine_tune_is_a_long_shot_at_the_fastest_model_near_the_teacher(setup):
    engine, space, study, long, history = long_finetune_study(setup)
    rng = np.random.default_rng(0)
    # Two accurate models, and the warm start's bold one: 76.6% after the short fine-tune (digits,
    # teacher 99%), needing 96% of its loss back, which the prior's 75% does not expect; and one
    # faster still, too far gone (loss over LONG_SHOT_LOSS) for any long fine-tune to bring near.
    record(study, space, engine, Proposal(candidate_with_prune(engine, 0.3), SAMPLER), accuracy=0.986, latency_ratio=0.27)
    record(study, space, engine, Proposal(candidate_with_prune(engine, 0.4), SAMPLER), accuracy=0.983, latency_ratio=0.26)
    # One a hair slower than the bold one, smaller, and more accurate than the prior expects the
    # bold one to end: the hypervolume alone would give it the long fine-tune, not the bold one.
    record(study, space, engine, Proposal(candidate_with_prune(engine, 0.85), SAMPLER), accuracy=0.94, latency_ratio=0.192)
    bold = candidate_with_prune(engine, 0.8)
    record(study, space, engine, Proposal(bold, WARM_START), accuracy=0.766, latency_ratio=0.19)
    record(study, space, engine, Proposal(candidate_with_prune(engine, 0.9), SAMPLER), accuracy=0.55, latency_ratio=0.12)
    assert 0.766 + long.recovery(history()) * (0.99 - 0.766) < 0.98
    proposal = long.propose(history(), rng)
    assert proposal is not None and proposal.candidate.key == bold.key
    # Measured (it won back half its loss): from then on, what long fine-tunes won back decides.
    record(study, space, engine, proposal, accuracy=0.766 + 0.5 * (0.99 - 0.766), latency_ratio=0.19)
    later = long.propose(history(), rng)
    assert later is None or later.candidate.key not in (bold.key, candidate_with_prune(engine, 0.9).key)


def candidate_with_prune(engine, ratio: float):
    row = engine.encoding.default.copy()
    row[engine.encoding.columns("prune")] = ratio
    return engine.encoding.decode(row[None, :])[0]


def test_a_screened_out_trial_is_no_answer_for_the_accuracy_model_but_still_a_failure_to_keep_clear_of(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["allocation"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    knowledge = engine.knowledge

    def history():
        return engine._history(study.get_trials(deepcopy=False))

    accurate, twin = candidate_with_prune(engine, 0.8), candidate_with_prune(engine, 0.75)
    record(study, space, engine, Proposal(accurate, SAMPLER), accuracy=0.97, latency_ratio=0.30)
    knowledge.refit(history())
    rows = engine.encoding.encode([accurate, twin])
    expected = knowledge.accuracy.predict(rows)
    # Its near twin stopped after the short fine-tune at 14%, as resnet18's pruned models do on the
    # way to 95-99%: a lower bound on what the full fine-tune reaches, not what it reaches.
    record(study, space, engine, Proposal(twin, SAMPLER), accuracy=0.14, latency_ratio=0.28, screened_out=True)
    knowledge.refit(history())
    assert knowledge.accuracy.predict(rows) == pytest.approx(expected)
    assert knowledge.accuracy.observations == 1
    assert len(history().trained()) == 2 and len(history().trained(screened=False)) == 1
    # The trust region still counts it among the failures (faster than the accurate model, so not beaten by it).
    region = knowledge.trust_region(history())
    assert region.failures.shape == (1, 2) and region.failures[0, 0] == pytest.approx(0.28)


def test_a_time_bounded_search_never_starts_a_long_fine_tune_it_cannot_finish(setup):
    import dataclasses
    import time

    engine, space = engine_for(setup, warm_start=False, proposers=["long_finetune"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    candidate = candidate_with_prune(engine, 0.5)
    record(study, space, engine, Proposal(candidate, SAMPLER), accuracy=0.90, latency_ratio=0.3)  # much to win back
    long = engine.proposers[LONG_FINETUNE]
    history = engine._history(study.get_trials(deepcopy=False))
    rng = np.random.default_rng(0)
    assert long.propose(history, rng) is not None  # bounded by trials: whenever it pays
    now = time.time()
    long.deadline = now + 40
    assert long.propose(history, rng) is not None  # no trial duration known yet
    # Its trial took 10 s: five times that does not fit in the 40 s left, it does in 60 s.
    timed = History([dataclasses.replace(r, seconds=10.0) for r in history.records])
    assert long.propose(timed, rng) is None
    long.deadline = now + 60
    assert long.propose(timed, rng) is not None
    # What counts is the candidate's own trial, not the typical one: a cheap (float) candidate
    # among slow (quantized) trials still fits.
    slow = candidate_with_prune(engine, 0.3)
    record(study, space, engine, Proposal(slow, SAMPLER), accuracy=0.99, latency_ratio=0.6)
    history = engine._history(study.get_trials(deepcopy=False))
    mixed = History([dataclasses.replace(r, seconds=4.0 if r.key == candidate.key else 12.0) for r in history.records])
    long.deadline = time.time() + 30
    chosen = long.propose(mixed, rng)
    assert chosen is not None and chosen.candidate.key == candidate.key
    long.deadline = time.time() + 15
    assert long.propose(mixed, rng) is None


def test_long_fine_tunes_pass_when_nothing_could_add_enough_or_the_factor_is_one(setup):
    engine, space = engine_for(setup, warm_start=False, proposers=["long_finetune"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    candidate = engine.encoding.decode(engine.encoding.default[None, :])[0]
    # At the teacher's accuracy already: nothing to win back.
    record(study, space, engine, Proposal(candidate, SAMPLER), accuracy=0.99, latency_ratio=0.5)
    history = engine._history(study.get_trials(deepcopy=False))
    assert engine.proposers[LONG_FINETUNE].propose(history, np.random.default_rng(0)) is None
    off, _ = engine_for(setup, warm_start=False, proposers=["long_finetune"], finetune={"long_factor": 1})
    assert off.proposers[LONG_FINETUNE].propose(history, np.random.default_rng(0)) is None


def test_a_long_fine_tune_is_the_configured_one_times_the_factor_and_never_screened():
    from slimsearch.config import FinetuneConfig
    from slimsearch.errors import ConfigError

    config = FinetuneConfig(epochs=3.0, screen_epochs=1.0, long_factor=3.0)
    plain, long = config.plan(1000), config.plan(1000, scale=config.long_factor)
    assert long.steps == 3 * plain.steps and plain.screen_step and long.screen_step is None
    for bad in (0.5, float("nan"), float("inf"), "3", True):
        with pytest.raises(ConfigError, match="finetune.long_factor must be a number >= 1"):
            FinetuneConfig(long_factor=bad)


def test_the_warm_starts_bold_point_takes_the_form_the_latency_probes_timed_faster(setup):
    from slimsearch.spaces.warm_start import BOLD_RATIO, hand_baseline

    task, config, space, priors = setup
    in_float, with_int8 = hand_baseline(space, ratios=(BOLD_RATIO,))
    for float_ratio, int8_ratio, expected in ((0.20, 0.26, in_float), (0.30, 0.26, with_int8)):
        probes = [{"candidate": in_float.to_dict(), "ratio": float_ratio},
                  {"candidate": with_int8.to_dict(), "ratio": int8_ratio}]
        engine = create_engine(config, space, task, {**priors, "latency_probes": probes}, TEACHER, seed=0)
        assert engine.warm_start.candidates[1] == expected
    # Without both timings the warm start keeps int8.
    engine = create_engine(config, space, task, priors, TEACHER, seed=0)
    assert engine.warm_start.candidates[1] == with_int8
