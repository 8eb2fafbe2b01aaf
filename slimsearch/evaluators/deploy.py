"""The model in the form a runtime executes: an ONNX file and an ONNX Runtime session.

Latency and accuracy are both taken from this form, because that is what the user ships;
a model that is fast in eager PyTorch but slow (or different) after export is not fast.
onnx and onnxruntime are imported inside the functions so that `slimsearch --help` stays instant.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimsearch.errors import ConfigError

# Opset 17 is the newest every ONNX Runtime release of the last years runs, and well inside
# what the legacy exporter supports (it stops at 20).
OPSET = 17
DYNAMO_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEVICES = ("cpu", "cuda")


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: Path, *,
                output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> Path:
    """Write `model` as ONNX to `path` (dynamic batch axis) and return the path.

    `output_names` names the model's outputs in order (one unless it returns a tuple).
    Exports a CPU copy in eval mode, so the caller's model keeps its device and training mode.
    The file appears atomically: a reader never sees a half-written or unchecked model.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().eval()
    cpu_input = example_input.detach().cpu()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with torch.no_grad():
            _export(cpu_model, cpu_input, tmp, tuple(output_names))
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _export(model: nn.Module, example_input: torch.Tensor, path: Path, output_names: tuple[str, ...]) -> None:
    common: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": list(output_names)}
    batch_axes = {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    try:
        # The legacy TorchScript exporter takes ~0.05 s against ~2-3 s for the dynamo one,
        # and every trial exports; its DeprecationWarning would otherwise repeat per trial.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (example_input,), str(path), dynamo=False,
                opset_version=OPSET, dynamic_axes=batch_axes, **common,
            )
        return
    except (TypeError, NotImplementedError, AttributeError, ImportError):
        # Raised when a future torch no longer has the legacy exporter (or the `dynamo` flag);
        # real export failures (unsupported operators) are RuntimeErrors and propagate.
        pass
    # The dynamo exporter builds opset 18 natively and down-converting to 17 fails noisily.
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model, (example_input,), str(path), dynamo=True, external_data=False, opset_version=DYNAMO_OPSET,
        dynamic_shapes=({0: batch},), **common,
    )


def onnx_session(path: Path, *, threads: int, device: str = "cpu", runtime: str = "onnxruntime") -> Any:
    """An ONNX Runtime session configured the way latency is measured: `threads` intra-op
    threads, no inter-op parallelism, sequential execution, all graph optimisations on.

    `runtime='onnxruntime-tensorrt'` (CUDA only) puts TensorRT's provider first, with CUDA and the
    CPU behind it for the nodes TensorRT does not take; its engines are cached on disk
    (`$SLIMSEARCH_CACHE/tensorrt`), so an architecture is built once.
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise ConfigError(f"ONNX Runtime device must be one of 'cpu', 'cuda', but got {device=}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"ONNX Runtime threads must be an integer >= 1, but got {threads=}")
    if not Path(path).is_file():
        raise ConfigError(f"ONNX model file does not exist: {str(path)!r}")
    providers = execution_providers(runtime, device, ort.get_available_providers())

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    # ORT silently falls back to CPU when the CUDA libraries fail to load; a CPU number
    # labelled "cuda" would be a lie, so refuse it.
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if device == "cuda" and session.get_providers()[0] != wanted:
        raise ConfigError(
            f"device='cuda' but ONNX Runtime could not load {wanted} "
            f"(session runs on {session.get_providers()}); check the CUDA/cuDNN (and TensorRT) libraries "
            "that onnxruntime-gpu needs"
        )
    return session


def execution_providers(runtime: str, device: str, available: list[str]) -> list:
    """ONNX Runtime's providers for a target, most preferred first, or a one-line refusal naming
    what this installation offers."""
    if runtime not in ("onnxruntime", "onnxruntime-tensorrt"):
        raise ConfigError(f"ONNX Runtime runtime must be 'onnxruntime' or 'onnxruntime-tensorrt', but got {runtime=}")
    if device == "cpu":
        if runtime == "onnxruntime-tensorrt":
            raise ConfigError("runtime='onnxruntime-tensorrt' runs on CUDA GPUs only, but got device='cpu'")
        return ["CPUExecutionProvider"]
    needed = ["TensorrtExecutionProvider"] if runtime == "onnxruntime-tensorrt" else []
    needed.append("CUDAExecutionProvider")
    missing = [name for name in needed if name not in available]
    if missing:
        raise ConfigError(f"runtime={runtime!r} on device='cuda' needs ONNX Runtime's {', '.join(missing)}, but only "
                          f"{available} are available; install onnxruntime-gpu instead of onnxruntime")
    providers: list = []
    if runtime == "onnxruntime-tensorrt":
        from slimsearch.config import default_cache_dir

        engines = default_cache_dir() / "tensorrt"
        engines.mkdir(parents=True, exist_ok=True)
        providers.append(("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                        "trt_engine_cache_path": str(engines)}))
    return providers + ["CUDAExecutionProvider", "CPUExecutionProvider"]


def onnx_predict(session: Any, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of `session` on `inputs`, computed `batch_size` rows at a time, as a CPU tensor."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"prediction batch_size must be an integer >= 1, but got {batch_size=}")
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    host = inputs.detach().cpu().contiguous()
    chunks = [
        torch.from_numpy(session.run([output_name], {input_name: chunk.numpy()})[0])
        for chunk in host.split(batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0)
