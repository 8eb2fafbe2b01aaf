"""The capability probe: a knob that does not build, train, run or export is left out with its reason."""

import json

from slimsearch.config import SearchConfig
from slimsearch.search.capability import SPACE_FILE, searched_space
from tests.conftest import slimsearch_cli
from tests.tasks import factories

TIED = "tests.tasks.factories:tied_weights"


def test_a_knob_that_fails_is_left_out_with_its_reason_and_the_rest_kept(tmp_path):
    config = SearchConfig.from_mapping({"task": TIED})
    task = factories.tied_weights()
    space = searched_space(task, config, tmp_path)
    reasons = {(u.family, u.target): u.reason for u in space.untouched}
    # Pruning the stem would have to reach the conv the model applies through its weight.
    assert "fails to train" in reasons[("prune", "stem")] and "expected input" in reasons[("prune", "stem")]
    assert ("prune", "stem") not in {(k.family, k.target) for k in space.knobs}
    assert {k.target for k in space.knobs if k.family == "prune"} == {"down"}
    assert {k.target for k in space.knobs if k.family == "separable"} == {"stem", "down"}
    # The run folder keeps the outcome; a second session (or a worker) reads it instead of probing.
    record = json.loads((tmp_path / SPACE_FILE).read_text())
    assert record["probe"]["checks"] > 0 and ["stem"] == [row["target"] for row in record["probe"]["excluded"]
                                                          if row["family"] == "prune"]
    written = (tmp_path / SPACE_FILE).stat().st_mtime_ns
    assert searched_space(task, config, tmp_path) == space
    assert (tmp_path / SPACE_FILE).stat().st_mtime_ns == written


def test_space_command_prints_knobs_per_family_and_every_layer_left_out():
    shown = slimsearch_cli("space", "--task", TIED, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "left out: pruned at its highest ratio, it fails to train" in " ".join(shown.stdout.split())
    as_json = slimsearch_cli("space", "--task", TIED, "--json", timeout=300)
    record = json.loads(as_json.stdout)
    assert [k["target"] for k in record["families"]["separable"]["knobs"]] == ["stem", "down"]
    left_out = {row["target"]: row["reason"] for row in record["families"]["prune"]["left_out"]}
    assert left_out["head"] == "its outputs are the model's outputs" and "fails to train" in left_out["stem"]


def test_a_ratio_whose_extreme_fails_is_narrowed_to_what_works(tmp_path):
    from tests.search import fault_tasks

    task = fault_tasks.fragile()  # its conv must keep 16 of its 32 channels
    space = searched_space(task, SearchConfig.from_mapping({"task": "fragile", "space": {"families": ["prune"]}}),
                           tmp_path)
    (knob,) = [k for k in space.knobs if k.family == "prune"]
    assert knob.target == "conv" and knob.domain.high == knob.extreme == 0.45
    (row,) = json.loads((tmp_path / SPACE_FILE).read_text())["families"]["prune"]["knobs"]
    assert row["values"] == "[0, 0.45] step 0.05" and "needs >= 16 channels" in row["narrowed"]


def test_a_teacher_that_cannot_train_is_refused_in_one_line():
    import pytest
    import torch
    import torchvision

    from slimsearch.config import SpaceConfig
    from slimsearch.errors import TaskError
    from slimsearch.search.capability import probe
    from slimsearch.spaces import Space

    torch.manual_seed(0)  # GoogLeNet returns a tuple with its auxiliary logits in training mode
    model = torchvision.models.googlenet(weights=None, num_classes=10, init_weights=False).eval()
    example = torch.randn(1, 3, 64, 64)
    space = Space.discover(model, example, SpaceConfig(families=("prune", "exits")))
    with pytest.raises(TaskError, match="the teacher itself fails to train .*GoogLeNetOutputs"):
        probe(space, model, example, torch.randn(4, 3, 64, 64), SpaceConfig())


def test_running_out_of_memory_stops_the_probe_instead_of_leaving_layers_out():
    # On 16 GB, vit_l_32's probe left 126 layers out as "failing" when it was the machine that ran out.
    import pytest
    import torch

    from slimsearch.config import SpaceConfig
    from slimsearch.errors import TaskError
    from slimsearch.search.capability import probe
    from slimsearch.spaces import Space
    from tests.search.fault_tasks import RunsOutOfMemoryWhenPruned

    torch.manual_seed(0)
    model, example = RunsOutOfMemoryWhenPruned().eval(), torch.randn(1, 1, 8, 8)
    settings = SpaceConfig(families=("prune", "separable"))
    space = Space.discover(model, example, settings)
    assert [k.target for k in space.knobs if k.family == "prune"] == ["conv"]
    with pytest.raises(TaskError, match="ran out of memory at the train step .*prune set.*no layer was left out"):
        probe(space, model, example, torch.randn(4, 1, 8, 8), settings)
