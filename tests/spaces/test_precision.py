"""Half precision as a knob: offered on targets that run it, evaluated in the numerics it ships in."""

from __future__ import annotations

import pytest
import torch

from slimsearch.config import SpaceConfig, TargetConfig
from slimsearch.evaluators.train import predict_logits
from slimsearch.spaces import Space
from slimsearch.tasks.models import ResidualCNN
from slimsearch.techniques import build_student

EXAMPLE = torch.randn(1, 1, 24, 24)
PRECISION_ONLY = SpaceConfig(families=("precision",))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResidualCNN(in_channels=1, num_classes=10, widths=(8, 16)).eval()


@pytest.mark.parametrize("runtime", ["torch", "torch-compile", "cudagraph"])
def test_a_gpu_torch_target_searches_one_model_wide_dtype(model, runtime):
    space = Space.discover(model, EXAMPLE, PRECISION_ONLY, target=TargetConfig(runtime=runtime, device="cuda"))
    (parameter,) = space.parameters()
    assert parameter.name == "precision:dtype"
    assert parameter.domain.options == ("float32", "float16", "bfloat16")
    (knob,) = space.knobs
    assert (knob.default, knob.extreme, knob.stage) == ("float32", "float16", None)


@pytest.mark.parametrize("target", [TargetConfig(), TargetConfig(runtime="torch-compile"),
                                    TargetConfig(runtime="onnxruntime", device="cuda"), None])
def test_other_targets_leave_precision_untouched_and_say_why(model, target):
    space = Space.discover(model, EXAMPLE, PRECISION_ONLY, target=target)
    assert not space.knobs
    (untouched,) = space.untouched
    assert untouched.family == "precision" and "CUDA targets with runtime torch" in untouched.reason


def test_chosen_precisions_keep_float32_as_the_default(model):
    settings = SpaceConfig(families=("precision",), precisions=("bfloat16", "float32"))
    space = Space.discover(model, EXAMPLE, settings, target=TargetConfig(runtime="torch", device="cuda"))
    assert space.parameters()[0].domain.options == ("float32", "bfloat16")
    assert space.default_candidate().family("precision") == {"dtype": "float32"}


def test_a_half_precision_student_is_evaluated_in_half_and_keeps_float32_weights(model):
    space = Space.discover(model, EXAMPLE, PRECISION_ONLY, target=TargetConfig(runtime="torch", device="cuda"))
    student = build_student(space.candidate({"precision:dtype": "float16"}), model, EXAMPLE)
    inputs = torch.randn(16, 1, 24, 24)
    half = predict_logits(student, inputs, device="cpu")
    full = predict_logits(model, inputs, device="cpu")
    assert half.dtype == torch.float32 and 0 < (half - full).abs().max() < 0.05
    assert all(p.dtype == torch.float32 for p in student.parameters())
