"""The deployment form of a quantized student: ONNX with QDQ int8 layers, fp16 weights, float elsewhere.

Built in three steps, so the runtime's own int8 kernels are what gets timed and shipped:
1. fold: the fake-quant wrappers are replaced by plain layers holding the quantized weights
   (techniques/quantization.fold), and the model is exported as float ONNX (BatchNorm is folded
   into the convs there; per-channel grids survive that, see techniques/quantization.py);
2. layers at 16 bits keep their weights as float16 initializers behind a Cast, which ONNX
   Runtime folds away at load time: the file is honestly half-size for them, the CPU computes in
   float (fp16 compute is a GPU matter);
3. ONNX Runtime's `quantize_static` turns only the layers at 8 bits or fewer into QDQ int8
   (per-channel symmetric weights in the reduced range -64..64 that the fake-quant grid uses,
   see techniques/quantization.py; uint8 activations calibrated on training batches). ORT fuses
   each DequantizeLinear -> Conv -> QuantizeLinear into an int8 kernel. Layers below 8 bits run
   as int8 too: these runtimes have no faster kernels for them, so their gain is size, not speed.

A model without quantized layers is exported as it is, by `export_onnx`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimsearch.evaluators.deploy import (INPUT_NAME, OUTPUT_NAME, export_onnx, external_data_file, publish_onnx,
                                         save_onnx)
from slimsearch.spaces.quant import INTEGER_BITS
from slimsearch.techniques.quantization import fold, quantized_layers

CALIBRATION_SAMPLES = 512
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def export_deployed(model: nn.Module, example_input: torch.Tensor, path: str | Path, *,
                    calibration_inputs: torch.Tensor | None = None, output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> Path:
    """Write the deployment form of `model` to `path` (atomically) and return the path.

    `calibration_inputs` (a few hundred training inputs) set the int8 activation ranges; they are
    required when the model has layers at 8 bits or fewer.
    """
    import onnx

    path = Path(path)
    layers = quantized_layers(model)
    if not layers:
        return export_onnx(model, example_input, path, output_names=output_names)
    integer = {name for name, layer in layers.items() if layer.bits <= INTEGER_BITS}
    half = {name for name, layer in layers.items() if layer.bits == 16}
    if integer and calibration_inputs is None:
        raise ValueError("calibration_inputs are needed to export a model with layers at 8 bits or fewer")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside `path`, so that moving the result into place is a rename, and under its name, which
    # its weights file (past 2 GB) carries.
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        folded = fold(model)
        float_path = export_onnx(folded, example_input, Path(tmp) / "float" / path.name, output_names=output_names)
        graph = onnx.load(str(float_path))
        nodes = layer_nodes(graph, set(layers), call_order=lambda: weighted_call_order(folded, example_input),
                            weights=lambda: layer_weights(folded, layers))
        if half:
            _store_half(graph, [nodes[name] for name in sorted(half)])
        save_onnx(graph, float_path)
        written = float_path
        if integer:
            written = Path(tmp) / "int8" / path.name
            written.parent.mkdir()
            _quantize_int8(float_path, written, [nodes[name].name for name in sorted(integer)],
                           calibration_inputs[:CALIBRATION_SAMPLES])
        onnx.checker.check_model(str(written))
        publish_onnx(written, path)
    return path


def module_name_of(node_name: str) -> str:
    """The module a node of the TorchScript exporter came from: "/stages/stages.0/stages.0.0/conv1/Conv"
    -> "stages.0.0.conv1". Each scope is either a full prefix of the next or one attribute name."""
    scopes = node_name.strip("/").split("/")[:-1]
    name = ""
    for scope in scopes:
        parent, _, last = name.rpartition(".") if name else ("", "", "")
        if last and scope.startswith(last + "."):  # "shortcut" then "shortcut.0"
            name = f"{parent}.{scope}" if parent else scope
        elif name and scope.startswith(name + "."):  # "stages" then "stages.0"
            name = scope
        else:
            name = f"{name}.{scope}" if name else scope
    return name


def layer_nodes(graph, names: set[str], call_order=None, weights=None) -> dict:
    """Layer name -> its weight node (Conv / Gemm / MatMul) in the exported graph.

    Found by the exporter's scope names; when those do not carry module paths (a torch.fx
    GraphModule, such as an early-exit segment, loses them), by call order instead: the
    exporter traces the forward pass, so weight nodes appear in the order the layers run.
    `call_order()` gives [(layer name, weight element count)] in that order. Attention breaks
    that order (nn.MultiheadAttention and Swin's windows pass their linears' weights to F.linear
    without calling the modules, so the graph has weight nodes no call accounts for); then each
    layer is found by its weight's values (`weights()`: name -> weight), which a layer without a
    batch norm folded into it keeps in the graph, transposed for a MatMul.
    """
    weight_nodes = [node for node in graph.graph.node if node.op_type in WEIGHT_OPS]
    found = {}
    for node in weight_nodes:
        name = module_name_of(node.name)
        if name in names:
            found.setdefault(name, node)
    if names <= set(found) or call_order is None:
        missing = sorted(names - set(found))
        if missing:
            raise RuntimeError(f"quantized layers not found in the exported ONNX graph: {', '.join(missing)}")
        return found
    calls = call_order()
    sizes = {init.name: math.prod(init.dims) for init in graph.graph.initializer}
    if len(calls) == len(weight_nodes) and all(
            node.input[1] not in sizes or sizes[node.input[1]] == numel for node, (_, numel) in zip(weight_nodes, calls)):
        matched = {name: node for (name, _), node in zip(calls, weight_nodes)}
        return {name: matched[name] for name in names}
    by_value = _nodes_by_weight_values(graph, weight_nodes, weights() if weights is not None else {}, sizes)
    if not names <= set(by_value):
        raise RuntimeError("cannot match the model's layers to the exported ONNX graph's weight nodes")
    return {name: by_value[name] for name in names}


def _nodes_by_weight_values(graph, weight_nodes: list, weights: dict, numel: dict[str, int]) -> dict:
    """Layer name -> the weight node whose initializer holds that layer's weight (or its transpose);
    `numel`: each initializer's element count."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in graph.graph.initializer}
    taken, found = set(), {}
    for name, weight in weights.items():
        weight = weight.detach().cpu().numpy()
        for node in weight_nodes:
            key = node.input[1] if len(node.input) > 1 else None
            if key not in initializers or node.name in taken or numel[key] != weight.size:
                continue
            value = numpy_helper.to_array(initializers[key])
            if any(value.shape == form.shape and np.allclose(value, form, rtol=1e-5, atol=1e-7)
                   for form in (weight, weight.T)):
                found[name] = node
                taken.add(node.name)
                break
    return found


def layer_weights(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """name -> weight of each named layer of `model`, in the model's module order."""
    wanted = set(names)
    return {name: module.weight for name, module in model.named_modules() if name in wanted}


@torch.no_grad()
def weighted_call_order(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, int]]:
    """(name, weight element count) of each conv / linear call of one forward pass, in order."""
    from slimsearch.spaces.introspect import trace_layers

    return [(call.name, call.module.weight.numel()) for call in trace_layers(model, example_input)]


def _store_half(graph, nodes) -> None:
    """Keep each node's weight initializer as float16 with a Cast back to float in front of it."""
    import onnx
    from onnx import numpy_helper

    initializers = {init.name: init for init in graph.graph.initializer}
    for node in nodes:
        weight = initializers.get(node.input[1])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        half_name = f"{weight.name}_fp16"
        half = numpy_helper.from_array(numpy_helper.to_array(weight).astype("float16"), half_name)
        graph.graph.initializer.remove(weight)
        graph.graph.initializer.append(half)
        cast_output = f"{weight.name}_fp32"
        graph.graph.node.insert(list(graph.graph.node).index(node), onnx.helper.make_node(
            "Cast", [half_name], [cast_output], to=onnx.TensorProto.FLOAT, name=f"{node.name}_weight_cast"))
        node.input[1] = cast_output


def _quantize_int8(float_path: Path, out_path: Path, node_names: list[str], inputs: torch.Tensor) -> None:
    """QDQ int8 for `node_names`; a float model with external weights gives one too (ORT names
    its weights file as save_onnx does, `<name>.data`)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{INPUT_NAME: b.detach().cpu().float().numpy()} for b in inputs.split(64)])

        def get_next(self):
            return next(self._batches, None)

    # quantize_static logs a pre-processing hint at WARNING on every call; it is about shape
    # inference for dynamic models and does not apply to our fixed-shape exports.
    with _quiet_root_logger():
        quantize_static(
            str(float_path), str(out_path), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True, nodes_to_quantize=node_names,
            calibrate_method=CalibrationMethod.MinMax, use_external_data_format=external_data_file(float_path).exists(),
        )


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
