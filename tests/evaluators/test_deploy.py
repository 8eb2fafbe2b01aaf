"""The exported ONNX model computes what the torch model computes, at any batch size."""

from __future__ import annotations

import pytest
import torch

from slimsearch.errors import ConfigError
from slimsearch.evaluators.deploy import export_onnx, onnx_predict, onnx_session
from slimsearch.tasks.models import ResidualCNN


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = ResidualCNN(in_channels=1, num_classes=10, widths=(8, 16))
    # A few training-mode passes give BatchNorm non-trivial running statistics to fold.
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 24, 24))
    return model.eval()


@pytest.fixture(scope="module")
def onnx_file(tiny_model, tmp_path_factory):
    return export_onnx(tiny_model, torch.randn(1, 1, 24, 24), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_matches_torch_at_any_batch_size(tiny_model, onnx_file, batch):
    inputs = torch.randn(batch, 1, 24, 24)
    with torch.no_grad():
        expected = tiny_model(inputs)
    got = onnx_predict(onnx_session(onnx_file, threads=1), inputs, batch_size=4)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_export_leaves_model_mode_alone_and_leaves_no_temp_files(tmp_path):
    model = ResidualCNN(in_channels=1, num_classes=10, widths=(8, 16)).train()
    path = export_onnx(model, torch.randn(2, 1, 24, 24), tmp_path / "sub" / "m.onnx")
    assert model.training
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]


def test_cuda_session_without_provider_names_the_provider(onnx_file):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
        onnx_session(onnx_file, threads=1, device="cuda")


@pytest.mark.parametrize(("kwargs", "bad"), [({"threads": 0}, "threads=0"), ({"threads": 1, "device": "tpu"}, "'tpu'")])
def test_session_rejects_bad_settings(onnx_file, kwargs, bad):
    with pytest.raises(ConfigError, match=bad):
        onnx_session(onnx_file, **kwargs)


def test_falls_back_to_dynamo_exporter_when_legacy_one_is_gone(tiny_model, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def export_without_legacy(*args, dynamo=True, **kwargs):
        if not dynamo:
            raise TypeError("export() got an unexpected keyword argument 'dynamo'")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export_without_legacy)
    path = export_onnx(tiny_model, torch.randn(1, 1, 24, 24), tmp_path / "dynamo.onnx")
    inputs = torch.randn(3, 1, 24, 24)
    with torch.no_grad():
        expected = tiny_model(inputs)
    assert (onnx_predict(onnx_session(path, threads=1), inputs) - expected).abs().max().item() < 1e-4


def test_execution_providers_put_tensorrt_first_and_keep_cuda_and_cpu_behind_it(tmp_path, monkeypatch):
    from slimsearch.evaluators.deploy import execution_providers

    monkeypatch.setenv("SLIMSEARCH_CACHE", str(tmp_path))
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("onnxruntime", "cpu", gpu) == ["CPUExecutionProvider"]
    assert execution_providers("onnxruntime", "cuda", gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    (tensorrt, options), *rest = execution_providers("onnxruntime-tensorrt", "cuda", gpu)
    assert tensorrt == "TensorrtExecutionProvider" and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["trt_engine_cache_enable"] and (tmp_path / "tensorrt").is_dir()  # engines are built once


@pytest.mark.parametrize(("runtime", "device", "available", "message"), [
    ("onnxruntime-tensorrt", "cpu", ["CPUExecutionProvider"], "runs on CUDA GPUs only"),
    ("onnxruntime-tensorrt", "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"],
     "needs ONNX Runtime's TensorrtExecutionProvider"),
    ("onnxruntime", "cuda", ["CPUExecutionProvider"], "needs ONNX Runtime's CUDAExecutionProvider"),
])
def test_missing_providers_are_named(runtime, device, available, message):
    from slimsearch.evaluators.deploy import execution_providers

    with pytest.raises(ConfigError, match=message):
        execution_providers(runtime, device, available)
