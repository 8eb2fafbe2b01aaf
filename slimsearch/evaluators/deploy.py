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
import math
import os
import re
import shutil
import tempfile
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
    file's metadata: `exporter_of(path)`. Weights past protobuf's 2 GB limit on one file go
    beside it, in `<name>.data` (ONNX external data), which ONNX Runtime reads from there.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().eval()
    cpu_input = example_input.detach().cpu()
    # A folder of its own: above 2 GB the exporters write each weight to a file beside the model.
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        exported = staging / "exported.onnx"
        with torch.no_grad():
            exporter = _export(cpu_model, cpu_input, exported, tuple(output_names))
        written = staging / path.name
        _mark_exporter(exported, written, exporter)
        onnx.checker.check_model(str(written))
        publish_onnx(written, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


# protobuf refuses a message of 2 GiB or more: weights above this (less room for the graph)
# are saved as external data.
ONNX_FILE_LIMIT = 2**31 - 2**27


def save_onnx(model, path: Path) -> None:
    """Write `model` to `path`, its weights inside it or, past ONNX_FILE_LIMIT, in `<name>.data`."""
    import onnx

    # onnx appends to an existing weights file: a model saved again (with its weights loaded) starts anew.
    external_data_file(path).unlink(missing_ok=True)
    if _weight_bytes(model) < ONNX_FILE_LIMIT:
        onnx.save(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external_data_file(path).name, size_threshold=1024)


def _weight_bytes(model) -> int:
    """The initializers' bytes, from their shapes (protobuf cannot size a tensor past 2 GB)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    return sum(math.prod(t.dims) * tensor_dtype_to_np_dtype(t.data_type).itemsize for t in model.graph.initializer)


def external_data_file(path: Path) -> Path:
    return Path(path).with_name(f"{Path(path).name}.data")


def publish_onnx(written: Path, path: Path) -> None:
    """Move a model written (by save_onnx, under `path`'s name) into place: its weights file first,
    so that the model never names a file not there yet; a stale weights file of an earlier model goes."""
    if Path(written).name != Path(path).name:
        raise ValueError(f"{written} must carry the name of {path}: its weights file is named after it")
    if external_data_file(written).exists():
        os.replace(external_data_file(written), external_data_file(path))
    else:
        external_data_file(path).unlink(missing_ok=True)
    os.replace(written, path)


def onnx_files_size(path: Path) -> int:
    """Bytes on disk of an ONNX model, its external weights file included."""
    data = external_data_file(path)
    return Path(path).stat().st_size + (data.stat().st_size if data.exists() else 0)


def _export(model: nn.Module, example_input: torch.Tensor, path: Path, output_names: tuple[str, ...]) -> str:
    """Export with the TorchScript exporter, else the dynamo one; returns which one wrote `path`."""
    common: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": list(output_names)}
    batch_axes = {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    try:
        # The legacy TorchScript exporter takes ~0.05 s against ~2-3 s for the dynamo one,
        # and every trial exports; its DeprecationWarning would otherwise repeat per trial.
        # On failure it also prints the whole TorchScript graph to stdout, from C++; the error says enough.
        with warnings.catch_warnings(), _stdout_silenced(), _attention_unfused():
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
        # An operator the TorchScript exporter has no symbolic for, one it cannot trace, or a
        # torch without the legacy exporter at all: the dynamo exporter decomposes the graph to
        # core ATen first (at several times the cost, and with other weight names).
        legacy_error = error
    # torch.export specialises a batch dimension of size 1, so trace with a batch of two.
    batch_input = example_input.expand(2, *example_input.shape[1:]).clone()
    try:
        with warnings.catch_warnings(), _quiet_dynamo_logs():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (batch_input,), str(path), dynamo=True, external_data=True, opset_version=DYNAMO_OPSET,
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


def _mark_exporter(exported: Path, written: Path, exporter: str) -> None:
    """`exported` saved again as `written`, with a note of which exporter wrote it."""
    import onnx

    model = onnx.load(str(exported))
    del model.metadata_props[:]  # the dynamo exporter leaves its own notes here; ours is the one we read
    model.metadata_props.add(key=EXPORTER_KEY, value=exporter)
    save_onnx(model, written)


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
def _attention_unfused():
    """nn.MultiheadAttention's inference fast path off while tracing: in eval mode without grad
    it calls one fused kernel (`aten::_native_multi_head_attention`) the TorchScript exporter has
    no symbolic for, while its unfused path computes the same from ops it exports. With it on, a
    ViT fell back to the dynamo exporter: 12 s against 4.8 s for vit_b_32, and weight nodes its
    quantization could not match to the model's layers."""
    fastpath = getattr(torch.backends, "mha", None)
    if fastpath is None or not hasattr(fastpath, "set_fastpath_enabled"):  # a torch without the switch
        yield
        return
    enabled = fastpath.get_fastpath_enabled()
    fastpath.set_fastpath_enabled(False)
    try:
        yield
    finally:
        fastpath.set_fastpath_enabled(enabled)


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
