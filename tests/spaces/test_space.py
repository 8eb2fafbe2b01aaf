from pathlib import Path

import pytest
import torch

from slimsearch.config import SpaceConfig, TargetConfig
from slimsearch.spaces import Space, list_families
from slimsearch.tasks.models import ResidualCNN
from slimsearch.techniques import build_student


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResidualCNN(in_channels=1, num_classes=10, widths=(16, 32, 64)).eval()


EXAMPLE = torch.randn(1, 1, 24, 24)


# A target that runs every family (half precision needs CUDA and a torch runtime; nothing here runs on it).
GPU_TARGET = TargetConfig(runtime="cudagraph", device="cuda")


@pytest.mark.parametrize("family", list_families())
def test_every_registered_family_discovers_knobs(model, family):
    space = Space.discover(model, EXAMPLE, SpaceConfig(families=(family,)), target=GPU_TARGET)
    assert space.knobs and all(knob.family == family for knob in space.knobs)


def test_pruning_knobs_follow_dependency_groups_and_leave_the_head_alone(model):
    space = Space.discover(model, EXAMPLE)
    pruned = {k.target for k in space.knobs if k.family == "prune"}
    assert "head" not in pruned
    assert any(u.target == "head" and "outputs" in u.reason for u in space.untouched)
    # conv2 of a residual block is coupled to the skip path: it is not a knob of its own.
    assert "stages.0.0.conv2" not in pruned and "stages.0.0.conv1" in pruned


@pytest.mark.parametrize("granularity, prune_parameters", [("layer", 6), ("stage", 3), ("global", 1)])
def test_granularity_ties_per_layer_knobs(model, granularity, prune_parameters):
    space = Space.discover(model, EXAMPLE, SpaceConfig(granularity=granularity))
    names = [p.name for p in space.parameters()]
    assert sum(name.startswith("prune:") for name in names) == prune_parameters
    assert "distill:temperature" in names and "distill:alpha" in names


def test_default_candidate_keeps_the_teacher_and_extreme_is_smallest(model):
    space = Space.discover(model, EXAMPLE)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    default = build_student(space.default_candidate(), model, EXAMPLE)
    extreme = build_student(space.extreme_candidate(), model, EXAMPLE)
    assert count(default) == count(model)
    assert count(extreme) < count(model) / 4
    assert space.signature() == Space.discover(model, EXAMPLE).signature()


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="the cap reads Linux's /proc")
def test_memory_capped_turns_running_out_into_a_memory_error_and_lifts_the_cap_after():
    import resource

    from slimsearch.spaces.pruning import _available_bytes, memory_capped

    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(MemoryError):
        with memory_capped(256 * 2**20 / _available_bytes()):  # 256 MiB more at most
            bytearray(2 * 2**30)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert len(bytearray(2**30)) == 2**30  # a gigabyte again, outside the block
