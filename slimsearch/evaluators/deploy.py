"""The model in the form a runtime executes: an ONNX file and an ONNX Runtime session.

Latency and accuracy are both taken from this form, because that is what the user ships;
a model that is fast in eager PyTorch but slow (or different) after export is not fast.
onnx and onnxruntime are imported inside the functions so that `slimsearch --help` stays instant.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimsearch.errors import ConfigError, StopRequested

# Opset 17 is the newest every ONNX Runtime release of the last years runs, and well inside
# what the legacy exporter supports (it stops at 20).
OPSET = 17
DYNAMO_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEVICES = ("cpu", "cuda")
TORCHSCRIPT, DYNAMO = "torchscript", "dynamo"
EXPORTER_KEY = "slimsearch.exporter"  # ONNX metadata: which exporter wrote the file


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: Path, *,
                output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> Path:
    """Write `model` as ONNX to `path` (dynamic batch axis) and return the path.

    `output_names` names the model's outputs in order (one unless it returns a tuple).
    Exports a CPU copy in eval mode, so the caller's model keeps its device and training mode.
    The file appears atomically: a reader never sees a half-written or unchecked model. Which
    exporter wrote it (the TorchScript one, or the dynamo one it falls back to) is kept in the
    file's metadata: `exporter_of(path)`.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().eval()
    cpu_input = example_input.detach().cpu()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with torch.no_grad():
            exporter = _export(cpu_model, cpu_input, tmp, tuple(output_names))
        _mark_exporter(tmp, exporter)
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _export(model: nn.Module, example_input: torch.Tensor, path: Path, output_names: tuple[str, ...]) -> str:
    """Export with the TorchScript exporter, else the dynamo one; returns which one wrote `path`."""
    common: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": list(output_names)}
    batch_axes = {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    try:
        # The legacy TorchScript exporter takes ~0.05 s against ~2-3 s for the dynamo one,
        # and every trial exports; its DeprecationWarning would otherwise repeat per trial.
        # On failure it also prints the whole TorchScript graph to stdout, from C++; the error says enough.
        with warnings.catch_warnings(), _stdout_silenced():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model, (example_input,), str(path), dynamo=False,
                opset_version=OPSET, dynamic_axes=batch_axes, **common,
            )
        return TORCHSCRIPT
    except StopRequested:  # a trial's time limit fired while exporting: stop, do not export again
        raise
    except Exception as error:
        # An operator the TorchScript exporter has no symbolic for (ViT's fused attention,
        # `aten::_native_multi_head_attention`), one it cannot trace, or a torch without the
        # legacy exporter at all: the dynamo exporter decomposes the graph to core ATen first.
        legacy_error = error
    # torch.export specialises a batch dimension of size 1, so trace with a batch of two.
    batch_input = example_input.expand(2, *example_input.shape[1:]).clone()
    try:
        with warnings.catch_warnings(), _quiet_dynamo_logs():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (batch_input,), str(path), dynamo=True, external_data=False, opset_version=DYNAMO_OPSET,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False, **common,
            )
    except Exception as error:
        raise RuntimeError(f"neither ONNX exporter can export this model: TorchScript: {_first_line(legacy_error)}; "
                           f"dynamo: {_first_line(error)}") from error
    return DYNAMO


def exporter_of(path: str | Path) -> str | None:
    """Which exporter wrote an ONNX file of ours ('torchscript' or 'dynamo'), from its metadata."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((prop.value for prop in model.metadata_props if prop.key == EXPORTER_KEY), None)


def exporters_in(folder: str | Path) -> str | None:
    """The exporter(s) that wrote the ONNX files in `folder` (a model, or an early-exit model's
    segments in `folder/exits`): 'torchscript', 'dynamo', or both joined by '+'."""
    folder = Path(folder)
    found = sorted({exporter_of(path) or "unknown" for path in [*folder.glob("*.onnx"), *folder.glob("exits/*.onnx")]})
    return "+".join(found) or None


def _mark_exporter(path: Path, exporter: str) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]  # the dynamo exporter leaves its own notes here; ours is the one we read
    model.metadata_props.add(key=EXPORTER_KEY, value=exporter)
    onnx.save(model, str(path))


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return f"{type(error).__name__}: {(text.splitlines() or [''])[0][:200]}"


@contextlib.contextmanager
def _stdout_silenced():
    """File descriptor 1 pointed at /dev/null: torch's exporter writes there from C++, past sys.stdout."""
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no real stdout (a notebook, a closed stream)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _quiet_dynamo_logs():
    """The dynamo exporter narrates its steps at INFO / WARNING on torch.onnx's loggers; a
    fallback is reported once, by the caller, not by a page of exporter output."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


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
