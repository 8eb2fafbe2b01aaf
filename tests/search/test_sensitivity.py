"""The layer sensitivity pass: one untuned accuracy per probed knob, computed once per run."""

import json

from slimsearch.config import SpaceConfig
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.search.sensitivity import FILE_NAME, layer_sensitivity
from slimsearch.spaces import Space
from slimsearch.tasks import create_task


def test_every_pruning_and_quantization_knob_is_probed_once_and_kept(tmp_path):
    task = create_task("digits")
    settings = SpaceConfig(families=("prune", "quant", "distill"))
    space = Space.discover(task.teacher, task.example_input, settings)
    priors = layer_sensitivity(space, task, settings, tmp_path)

    assert set(priors["prune"]) == {k.target for k in space.knobs if k.family == "prune"}
    assert set(priors["quant"]) == {k.target for k in space.knobs if k.family == "quant" and "4-uniform" in k.domain.options}
    assert priors["teacher_accuracy"] == accuracy(task.teacher, task.val)
    accuracies = [*priors["prune"].values(), *priors["quant"].values()]
    assert all(0.0 <= value <= 1.0 for value in accuracies)
    # Halving a layer's channels without fine-tuning costs accuracy somewhere, and the layers
    # differ: the ranking the warm start relies on is not a tie.
    assert min(priors["prune"].values()) < priors["teacher_accuracy"] - 0.02
    assert len(set(priors["prune"].values())) > 1

    assert json.loads((tmp_path / FILE_NAME).read_text()) == priors
    assert layer_sensitivity(space, task, settings, tmp_path) == priors  # read back, not recomputed
