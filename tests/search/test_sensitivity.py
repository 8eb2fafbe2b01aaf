"""The priors: layer sensitivity (untuned accuracy with one knob changed) and latency probes,
computed once per study, kept in the study and the run folder, reused for the same model."""

import json

import pytest

from slimsearch.config import SearchConfig, SpaceConfig
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.search.priors import FILE_NAME, PRIORS_ATTR, RANDOM_PROBES, ensure_priors, latency_probe_candidates
from slimsearch.search.sensitivity import layer_sensitivity, probe_plan
from slimsearch.spaces import Space
from slimsearch.spaces.encoding import Encoding
from slimsearch.tasks import create_task


@pytest.fixture(scope="module")
def digits():
    return create_task("digits")


def test_every_knob_is_probed_once_at_each_probe_value(digits):
    settings = SpaceConfig(families=("prune", "quant", "separable", "distill"))
    space = Space.discover(digits.teacher, digits.example_input, settings)
    priors = layer_sensitivity(space, digits, settings)

    assert priors["complete"]
    probes = priors["probes"]
    assert set(probes["prune"]) == {k.target for k in space.knobs if k.family == "prune"}
    assert all(set(by_value) == {"0.5"} for by_value in probes["prune"].values())
    assert all(set(by_value) == {'"2-uniform"', '"4-uniform"'} for by_value in probes["quant"].values())
    assert set(probes["separable"]) == {k.target for k in space.knobs if k.family == "separable"}
    assert priors["teacher_accuracy"] == accuracy(digits.teacher, digits.val)
    values = [a for family in probes.values() for by_value in family.values() for a in by_value.values()]
    assert all(0.0 <= value <= 1.0 for value in values)
    # Cutting a layer without fine-tuning costs accuracy somewhere, and the layers differ: the
    # ranking the proposers shape their candidates by is not a tie.
    assert min(priors["prune"].values()) < priors["teacher_accuracy"] - 0.02
    assert len(set(priors["prune"].values())) > 1
    # Two bits cost more than four, layer by layer, on the whole.
    harder = sum(by_value['"2-uniform"'] <= by_value['"4-uniform"'] for by_value in probes["quant"].values())
    assert harder >= len(probes["quant"]) / 2


def test_a_time_bound_pass_keeps_the_most_telling_probes_first(digits):
    settings = SpaceConfig(families=("prune", "quant", "distill"))
    space = Space.discover(digits.teacher, digits.example_input, settings)
    plan = probe_plan(space)
    one_per_knob = len([k for k in space.knobs if k.family in ("prune", "quant")])
    assert [value for _, value in plan[:one_per_knob]].count("2-uniform") == len([k for k in space.knobs if k.family == "quant"])
    cut = layer_sensitivity(space, digits, settings, seconds=0.0)
    assert not cut["complete"] and cut["probes"] == {} and cut["prune"] == {}


def test_latency_probes_span_the_families_without_repeats():
    task = create_task("digits")
    space = Space.discover(task.teacher, task.example_input, SpaceConfig())
    candidates = latency_probe_candidates(Encoding(space))
    assert len(candidates) == len(set(candidates)) >= 8
    assert space.default_candidate() not in candidates
    assert any(any(v > 0 for v in c.family("prune").values()) for c in candidates)
    assert any(any(v is True for v in c.family("separable").values()) for c in candidates)
    assert any(any(v < 1 for v in c.family("lowrank").values()) for c in candidates)
    assert any(any(v == "8-uniform" for v in c.family("quant").values()) for c in candidates)
    assert any(any(v != "off" for k, v in c.family("exits").items() if k != "criterion") for c in candidates)
    # Uneven ones too, so the latency fit can tell weights from work and price precision switches.
    assert any(len(set(c.family("prune").values())) > 1 for c in candidates)
    assert any({"8-uniform", "32-float"} <= set(c.family("quant").values()) for c in candidates)
    # Then random genomes, mixing families as the proposers do; the same ones every time (the
    # priors are cached per model).
    assert len(candidates) >= 8 + RANDOM_PROBES - 2
    assert candidates == latency_probe_candidates(Encoding(space))
    mixed = [c for c in candidates if sum(_compressed(c, family) for family in ("prune", "quant", "separable", "lowrank")) >= 3]
    assert len(mixed) >= RANDOM_PROBES // 2


def _compressed(candidate, family: str) -> bool:
    untouched = {"prune": 0.0, "quant": "32-float", "separable": False, "lowrank": 1.0}[family]
    return any(value != untouched for value in candidate.family(family).values())


def test_priors_are_kept_in_the_study_and_reused_for_the_same_model(tmp_path, monkeypatch, tiny_settings):
    import optuna

    from slimsearch.search.trial import TrialContext

    monkeypatch.setenv("SLIMSEARCH_CACHE", str(tmp_path / "cache"))
    config = SearchConfig.from_mapping({**tiny_settings, "space": {"families": ["prune", "quant", "distill"]}})
    task = create_task(config.task)
    space = Space.discover(task.teacher, task.example_input, config.space)
    messages = []
    studies = []
    for name in ("first", "second"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        context = TrialContext.create(config, task, space, run_dir)
        try:
            study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
            priors = ensure_priors(study, context, messages.append)
        finally:
            context.close()
        assert study.user_attrs[PRIORS_ATTR] == priors
        assert json.loads((run_dir / FILE_NAME).read_text()) == priors
        studies.append(priors)
    assert studies[0] == studies[1]  # the second search of the same model reused the first one's
    assert "layer sensitivity probes in" in messages[0] and "earlier search of this model" in messages[1]
    assert all(0 < probe["ratio"] < 2 for probe in studies[0]["latency_probes"])
