import pytest
import torch
import torchvision

from slimsearch.evaluators.deploy import export_onnx, onnx_predict, onnx_session
from slimsearch.spaces import Space
from slimsearch.techniques import build_student
from slimsearch.techniques.pruning import kept_channels


@pytest.mark.parametrize("ratio, kept", [(0.0, 64), (0.5, 32), (0.9, 8), (0.99, 8), (0.3, 48)])
def test_kept_channels_rounds_to_multiples(ratio, kept):
    assert kept_channels(64, ratio, 8) == kept


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_pruning_real_torchvision_models(name, tmp_path):
    """Residual adds (ResNet) and depthwise blocks (MobileNetV2) prune consistently and still export."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    example = torch.randn(1, 3, 32, 32)
    space = Space.discover(model, example)
    values = {p.name: 0.5 for p in space.parameters() if p.name.startswith("prune:")}
    student = build_student(space.candidate(values), model, example).eval()
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in student.parameters())
    assert after < 0.5 * before
    batch = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = student(batch)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    session = onnx_session(export_onnx(student, example, tmp_path / "pruned.onnx"), threads=1)
    assert torch.allclose(onnx_predict(session, batch), logits, atol=1e-4)
