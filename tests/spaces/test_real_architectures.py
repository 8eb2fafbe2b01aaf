"""The architectures a new user's search crashed on (issue 15), each now searched or refused per layer.

Real torchvision models (random weights, small inputs) or small instances of torchvision's own
classes (ConvNeXt, VisionTransformer), so each test takes seconds.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.vision_transformer import VisionTransformer

from slimsearch.config import SpaceConfig
from slimsearch.evaluators.deploy import export_onnx, exporter_of, onnx_predict, onnx_session
from slimsearch.evaluators.exit_deploy import export_early_exit
from slimsearch.evaluators.exit_runner import EarlyExitRunner
from slimsearch.spaces import Candidate, Space
from slimsearch.spaces.exit_points import find_exit_points, trace
from slimsearch.techniques import build_student
from slimsearch.techniques.exits import ExitHead


def _model(name: str, size: int, **kwargs) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    return model, torch.randn(1, 3, size, size)


def _exits_all_on(space: Space) -> Candidate:
    stages = {k.target: 0.5 for k in space.knobs if k.family == "exits" and k.stage is not None}
    return Candidate({"exits": {"criterion": "max_prob", **stages}})


def _runner_matches_torch(student, example, inputs, folder) -> None:
    from slimsearch.techniques.exits import exit_outcomes

    with torch.no_grad():
        reference, taken = exit_outcomes(student.exit_logits(inputs), student.thresholds, student.criterion)
    export_early_exit(student, example, folder)
    logits, exits = EarlyExitRunner(folder).predict(inputs.numpy())
    np.testing.assert_array_equal(exits, taken.numpy())
    np.testing.assert_allclose(logits, reference.numpy(), rtol=1e-3, atol=1e-4)


def test_shufflenet_pruning_is_left_out_with_the_reason_not_a_crash():
    # Torch-Pruning's reshape mapping divides by zero on the channel shuffle, at every input size.
    model, example = _model("shufflenet_v2_x0_5", 64)
    space = Space.discover(model, example, SpaceConfig())
    assert not [k for k in space.knobs if k.family == "prune"]
    reason = next(u.reason for u in space.untouched if u.family == "prune" and u.target == "*")
    assert "Torch-Pruning cannot build this model's dependency graph" in reason and "ZeroDivisionError" in reason
    assert [k for k in space.knobs if k.family == "quant"] and [k for k in space.knobs if k.family == "exits"]


@pytest.mark.slow
def test_swin_v2_pruning_is_left_out_when_its_graph_outgrows_memory_not_the_machine():
    # Torch-Pruning's index mappings on Swin V2 grow until the machine runs out (on a 24 GB machine
    # the kernel killed the process); discovery caps the build. In a process of its own, with no
    # limit set from outside: should the cap fail, the kernel kills that process, not the suite.
    import subprocess
    import sys

    script = (
        "import torch, torchvision\n"
        "from slimsearch.config import SpaceConfig\n"
        "from slimsearch.spaces import Space\n"
        "model = torchvision.models.swin_v2_t(weights=None, num_classes=10).eval()\n"
        "space = Space.discover(model, torch.randn(1, 3, 64, 64), SpaceConfig(families=('prune', 'quant')))\n"
        "print(next(u.reason for u in space.untouched if u.family == 'prune' and u.target == '*'))\n"
        "print(sum(k.family == 'quant' for k in space.knobs), 'quant knobs')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    reason, quant = done.stdout.strip().splitlines()[-2:]
    assert "Torch-Pruning cannot build this model's dependency graph (MemoryError" in reason, reason
    assert int(quant.split()[0]) > 0  # the other families are offered as before


def test_regnet_convs_feeding_grouped_convs_prune_in_equal_groups(tmp_path):
    model, example = _model("regnet_x_400mf", 32)
    space = Space.discover(model, example, SpaceConfig(families=("prune",)))
    grouped = ["trunk_output.block3.block3-0.f.a.0", "trunk_output.block3.block3-0.f.b.0",  # feeds / is groups=10
               "trunk_output.block4.block4-7.f.a.0"]  # feeds a groups=25 conv
    assert {k.target for k in space.knobs} >= set(grouped)
    for ratio in (0.9, 0.5):
        student = build_student(Candidate({"prune": dict.fromkeys(grouped, ratio)}), model, example).eval()
        for name in ("trunk_output.block3.block3-0.f.b.0", "trunk_output.block4.block4-7.f.b.0"):
            conv = student.get_submodule(name)
            assert conv.in_channels % conv.groups == 0 and conv.out_channels % conv.groups == 0
        assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in model.parameters())
        inputs = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            reference = student(inputs)
        logits = onnx_predict(onnx_session(export_onnx(student, example, tmp_path / f"{ratio}.onnx"), threads=1), inputs)
        torch.testing.assert_close(logits, reference, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("size", [13, 6, 14, 7, 4, 2])
def test_exit_heads_pool_like_adaptive_pooling_and_export_at_any_map_size(size, tmp_path):
    head = ExitHead(8, 10, (size, size + 1)).eval()
    features = torch.randn(3, 8, size, size + 1)
    grid = min(4, size)
    expected = head.fc(torch.flatten(F.adaptive_avg_pool2d(features, grid), 1))
    torch.testing.assert_close(head(features), expected, rtol=1e-5, atol=1e-6)
    session = onnx_session(export_onnx(head, features[:1], tmp_path / "head.onnx"), threads=1)
    torch.testing.assert_close(onnx_predict(session, features), expected, rtol=1e-4, atol=1e-5)


def test_squeezenet_exits_export_on_13_and_6_pixel_maps(tmp_path):
    model, example = _model("squeezenet1_0", 32)
    space = Space.discover(model, example, SpaceConfig(families=("exits",)))
    student = build_student(_exits_all_on(space), model, example).eval()
    shapes = [point.spatial for point in find_exit_points(trace(model), example)]
    assert (13, 13) in shapes and (6, 6) in shapes
    _runner_matches_torch(student, example, torch.randn(6, 3, 32, 32), tmp_path / "exits")


def _small_convnext() -> ConvNeXt:
    torch.manual_seed(0)
    settings = [CNBlockConfig(16, 32, 2), CNBlockConfig(32, 48, 2), CNBlockConfig(48, None, 2)]
    return ConvNeXt(settings, num_classes=10).eval()


def test_convnext_exits_read_channels_last_blocks_as_channels_last(tmp_path):
    model, example = _small_convnext(), torch.randn(1, 3, 32, 32)
    points = find_exit_points(trace(model), example)
    # One exit after each of the first two resolutions (8 x 8 and 4 x 4); none after the last.
    assert [(p.stage, p.spatial, p.channels) for p in points] == [("stage2", (8, 8), 16), ("stage3", (4, 4), 32)]
    space = Space.discover(model, example, SpaceConfig(families=("exits",)))
    student = build_student(_exits_all_on(space), model, example).eval()
    assert [segment.exit_head.fc.in_features for segment in student.segments[:-1]] == [16 * 16, 32 * 16]
    _runner_matches_torch(student, example, torch.randn(5, 3, 32, 32), tmp_path / "exits")


def test_convnext_exit_stage_names_survive_every_substitution():
    model, example = _small_convnext(), torch.randn(1, 3, 32, 32)
    families = ("prune", "quant", "separable", "lowrank", "exits")
    space = Space.discover(model, example, SpaceConfig(families=families))
    stages = [k.target for k in space.knobs if k.family == "exits" and k.stage is not None]
    extreme = {f: {k.target: k.extreme for k in space.knobs if k.family == f}
               for f in ("prune", "quant", "separable", "lowrank")}
    substituted = build_student(Candidate(extreme), model, example)
    assert [p.stage for p in find_exit_points(trace(substituted), example)] == stages
    # Low-rank first, then exits at both stages: the candidate's stage names still exist.
    student = build_student(Candidate({**extreme, "exits": {"criterion": "max_prob", **dict.fromkeys(stages, 0.5)}}),
                            model, example)
    assert student.exit_points == stages


def _small_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10).eval()


def test_a_vision_transformer_exports_through_torchscript_with_attention_unfused(tmp_path):
    # With nn.MultiheadAttention's inference fast path on, tracing meets the fused
    # aten::_native_multi_head_attention, which only the (slower) dynamo exporter took.
    vit = _small_vit()
    example, inputs = torch.randn(1, 3, 32, 32), torch.randn(4, 3, 32, 32)
    assert torch.backends.mha.get_fastpath_enabled()
    path = export_onnx(vit, example, tmp_path / "vit.onnx")
    assert exporter_of(path) == "torchscript"
    assert torch.backends.mha.get_fastpath_enabled()  # switched back after the export
    with torch.no_grad():
        torch.testing.assert_close(onnx_predict(onnx_session(path, threads=1), inputs), vit(inputs), rtol=1e-3, atol=1e-4)
    cnn, cnn_example = _model("squeezenet1_1", 32)
    assert exporter_of(export_onnx(cnn, cnn_example, tmp_path / "cnn.onnx")) == "torchscript"


@pytest.mark.parametrize("architecture", ["vit", "swin"])
def test_attention_models_keep_every_quantized_layer_also_in_exit_segments(architecture):
    """The probe left every ViT layer out of quantization (the dynamo exporter's graph could not
    be matched to the layers), and Swin's quantized exits (attention passes its linears' weights
    to F.linear, so call order did not match the graph)."""
    from torchvision.models.swin_transformer import SwinTransformer

    from slimsearch.search.capability import probe

    torch.manual_seed(0)
    model = _small_vit() if architecture == "vit" else SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 2], window_size=[4, 4],
        num_classes=10).eval()
    example, inputs = torch.randn(1, 3, 32, 32), torch.randn(8, 3, 32, 32)
    settings = SpaceConfig(families=("quant", "exits"))
    space = Space.discover(model, example, settings)
    assert [k for k in space.knobs if k.family == "exits" and k.stage is not None]
    outcome = probe(space, model, example, inputs, settings)
    assert not outcome.excluded, [(u.family, u.target, u.reason) for u in outcome.excluded]


def test_swin_exits_take_channels_last_features(tmp_path):
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 2], window_size=[4, 4],
                            num_classes=10).eval()
    example = torch.randn(1, 3, 32, 32)
    points = find_exit_points(trace(model), example)
    assert [(p.stage, p.shape, p.channel_axis) for p in points] == [("stage2", (1, 8, 8, 16), 3),
                                                                    ("stage3", (1, 4, 4, 32), 3)]
    space = Space.discover(model, example, SpaceConfig(families=("exits",)))
    student = build_student(_exits_all_on(space), model, example).eval()
    _runner_matches_torch(student, example, torch.randn(5, 3, 32, 32), tmp_path / "exits")
