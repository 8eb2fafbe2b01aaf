"""Every architecture family (separable, low-rank, early exits) alone and with pruning, on the
built-in teachers' architectures and on torchvision's ResNet-18 and MobileNetV2: the student
runs, exports to ONNX, and ONNX Runtime predicts what torch predicts.

Weights are random (untrained): these tests are about structure and export, and training four
teachers would only make them slow.
"""

import numpy as np
import pytest
import torch
import torchvision

from slimsearch.config import SpaceConfig
from slimsearch.evaluators.deploy import export_onnx, onnx_predict, onnx_session
from slimsearch.evaluators.exit_deploy import export_early_exit, is_early_exit
from slimsearch.evaluators.exit_runner import EarlyExitRunner
from slimsearch.spaces import Candidate, Space
from slimsearch.techniques import build_student
from slimsearch.techniques.exits import confidence, exit_outcomes
from slimsearch.techniques.quantization import calibrate
from slimsearch.tasks.models import ResidualCNN


def _models():
    return {
        "digits": (lambda: ResidualCNN(in_channels=1, num_classes=10, widths=(32, 64, 128)), (1, 24, 24)),
        "mnist1d": (lambda: ResidualCNN(in_channels=1, num_classes=10, widths=(32, 64, 128), dims=1), (1, 40)),
        "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32)),
        "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), (3, 32, 32)),
    }


def _choices(space: Space, family: str) -> dict:
    knobs = [k for k in space.knobs if k.family == family]
    if family == "separable":
        return {k.target: True for k in knobs}
    if family == "lowrank":
        return {k.target: min(k.domain.options) for k in knobs}
    if family == "prune":
        return {k.target: 0.5 for k in knobs}
    if family == "quant":
        return {k.target: "8-uniform" for k in knobs}
    stages = [k.target for k in knobs if k.target != "criterion"]
    # The first and the last exit point: both ends of the network get a head.
    return {"criterion": "max_prob", **{k: 0.5 for k in {stages[0], stages[-1]}}}


@pytest.fixture(scope="module", params=list(_models()))
def model_case(request):
    torch.manual_seed(0)
    build, shape = _models()[request.param]
    teacher = build().eval()
    # BatchNorm statistics of a fresh model are 0 / 1; a few training batches make them real.
    teacher.train()
    with torch.no_grad():
        for _ in range(3):
            teacher(torch.randn(16, *shape))
    teacher.eval()
    example = torch.randn(1, *shape)
    space = Space.discover(teacher, example, SpaceConfig(families=("prune", "separable", "lowrank", "exits", "quant")))
    return request.param, teacher, example, space, torch.randn(24, *shape)


@pytest.mark.parametrize("families", [("separable",), ("lowrank",), ("exits",), ("separable", "prune"),
                                      ("lowrank", "prune"), ("exits", "prune"),
                                      ("separable", "lowrank", "prune", "quant", "exits")])
def test_family_applies_runs_and_exports(model_case, families, tmp_path):
    name, teacher, example, space, inputs = model_case
    candidate = Candidate({family: _choices(space, family) for family in families})
    student = build_student(candidate, teacher, example).eval()
    quantized = "quant" in families
    if quantized:
        calibrate(student, inputs)
    # Early-exit segments are fx GraphModules: they keep the layers and their names, not the
    # SeparableConv / LowRank containers, so look for the layers by name.
    names = [module_name for module_name, _ in student.named_modules()]
    if "separable" in families:
        assert any(n.endswith(".depthwise") for n in names), f"{name}: nothing was made separable"
    if "lowrank" in families:
        assert any(n.endswith(".down") for n in names), f"{name}: nothing was factorised"
    if "prune" in families:
        assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())

    if "exits" in families:
        assert is_early_exit(student) and len(student.exit_points) == len(set(_choices(space, "exits"))) - 1
        with torch.no_grad():
            all_logits = student.exit_logits(inputs)
        # Random heads are unsure of everything: put the first threshold between the two middle
        # confidences (not on one: rounding would decide), so half the samples leave early.
        middle = confidence(all_logits[0], "max_prob").sort().values[len(inputs) // 2 - 1:len(inputs) // 2 + 1]
        student.thresholds[0] = float(middle.mean())
        reference, reference_exits = exit_outcomes(all_logits, student.thresholds, "max_prob")
        export_early_exit(student, example, tmp_path / "exits", calibration_inputs=inputs)
        logits, exits = EarlyExitRunner(tmp_path / "exits").predict(inputs.numpy())
        assert 0 < (exits == 0).sum() < len(inputs)
        if not quantized:
            np.testing.assert_array_equal(exits, reference_exits.numpy())
            np.testing.assert_allclose(logits, reference.numpy(), rtol=1e-3, atol=1e-4 * float(reference.abs().max()))
        # Eager batch-1 inference takes the same exits as the batched evaluation.
        with torch.no_grad():
            single = torch.cat([student(inputs[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(single, reference[:4], rtol=1e-4, atol=1e-4)
    else:
        with torch.no_grad():
            reference = student(inputs)
        session = onnx_session(export_onnx(student, example, tmp_path / "student.onnx"), threads=1)
        logits = onnx_predict(session, inputs).numpy()
        np.testing.assert_allclose(logits, reference.numpy(), rtol=1e-3, atol=1e-4 * float(reference.abs().max()))
    agreement = (np.asarray(logits).argmax(1) == reference.numpy().argmax(1)).mean()
    assert agreement >= (0.9 if quantized else 1.0), f"{name} {families}: ONNX agrees on {agreement:.0%}"


def test_exit_points_are_found_after_each_stage_but_the_last(model_case):
    name, _, _, space, _ = model_case
    stages = [k.target for k in space.knobs if k.family == "exits" and k.target != "criterion"]
    expected = {"digits": 2, "mnist1d": 2, "resnet18": 4, "mobilenet_v2": 4}[name]
    assert len(stages) == expected, f"{name}: exit points {stages}"
