"""Where a network can be cut for an early exit: after each stage, where one tensor carries all
that the rest of the network needs.

The model is traced with torch.fx (quantization wrappers stay opaque leaves). A node is a cut
point when no earlier value is still needed after it: in a residual block the block's input
stays live until the add, so cuts fall between blocks, never inside one. This works for
sequential and residual models alike (ResNet, MobileNetV2, the built-in CNNs) without knowing
how their code is organised.

Stages are runs of equal spatial resolution, numbered in order of first appearance; the exit
point of a stage is its last cut, and the last stage has none (its exit would be the model's own
head). Resolution means the axes that are neither batch nor channels, so the channel axis of
every tensor is followed through the graph (`channel_axes`): ConvNeXt and Swin compute in
channels-last (N, H, W, C) between permutes, and reading such a tensor as (C, H, W) would invent
stages whose heads take a width for channels. Because only resolutions name stages, the names
stay the same after any substitution (a separable pair or low-rank factors produce the
resolution the layer they replace produced), pruning or quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn


@dataclass(frozen=True)
class ExitPoint:
    stage: str  # "stage1", ...
    node: str  # the fx node whose output the exit reads
    shape: tuple[int, ...]  # that output's shape on the example input
    channel_axis: int = 1  # where its channels are: 1 (N, C, ...) or the last axis (N, ..., C)

    @property
    def channels(self) -> int:
        return self.shape[self.channel_axis]

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(size for axis, size in enumerate(self.shape) if axis not in (0, self.channel_axis))


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        from slimsearch.techniques.quantization import QuantizedLayer

        return isinstance(module, QuantizedLayer) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """`model` as an fx GraphModule with the same module names; raises if it cannot be traced."""
    graph = _Tracer().trace(model)
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


@torch.no_grad()
def find_exit_points(graph_module: fx.GraphModule, example_input: torch.Tensor) -> list[ExitPoint]:
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = graph_module.training
    graph_module.eval()
    try:
        ShapeProp(graph_module).propagate(example_input)
    finally:
        graph_module.train(was_training)
    nodes = list(graph_module.graph.nodes)
    axes = channel_axes(graph_module)
    position = {node: index for index, node in enumerate(nodes)}
    last_use = {node: max([position[user] for user in node.users], default=position[node]) for node in nodes}
    live: set[fx.Node] = set()
    cuts: list[fx.Node] = []
    for index, node in enumerate(nodes):
        live.add(node)
        live = {value for value in live if last_use[value] > index}
        if node.op not in ("placeholder", "output") and live == {node} and axes.get(node) is not None:
            cuts.append(node)
    resolutions: list[tuple[int, ...]] = []
    for node in nodes:
        if axes.get(node) is not None and _resolution(node, axes[node]) not in resolutions:
            resolutions.append(_resolution(node, axes[node]))
    last_cut: dict[tuple[int, ...], fx.Node] = {}
    for node in cuts:
        last_cut[_resolution(node, axes[node])] = node
    # An exit only pays if weighted spatial work remains after it; past the last conv, an exit
    # would read the same features as the model's own head.
    last_conv = max((position[node] for node in nodes if node.op == "call_module" and _is_spatial_layer(
        graph_module.get_submodule(node.target), _shape(node))), default=-1)
    return [ExitPoint(f"stage{resolutions.index(resolution) + 1}", node.name, _shape(node), axes[node])
            for resolution, node in last_cut.items() if position[node] < last_conv]


def channel_axes(graph_module: fx.GraphModule) -> dict[fx.Node, int | None]:
    """The channel axis of every node's output of rank >= 3 (shapes propagated), None where unknown.

    The input is channels-first; convolutions, pooling and batch norm produce channels-first;
    a linear layer works on the last axis, so its output's channels are there; permutes and
    transposes move the axis; everything else keeps the axis of an input of the same rank, or
    of an input whose leading axes up to the channels it keeps (a reshape that splits the
    spatial axes). A reshape that folds the channels away (a channel shuffle) leaves it unknown:
    such a node is neither a cut point nor a resolution.
    """
    axes: dict[fx.Node, int | None] = {}
    for node in graph_module.graph.nodes:
        shape = _shape(node)
        axes[node] = None if shape is None or len(shape) < 3 else _channel_axis(graph_module, node, shape, axes)
    return axes


_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.pooling._AvgPoolNd,
                   nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                   nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)


def _channel_axis(graph_module: fx.GraphModule, node: fx.Node, shape: tuple[int, ...], axes: dict) -> int | None:
    rank = len(shape)
    if node.op == "placeholder":
        return 1
    if node.op == "get_attr":
        return None
    source = next((arg for arg in node.all_input_nodes if axes.get(arg) is not None), None)
    if node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        layer = getattr(module, "layer", module)  # a quantization wrapper computes as the layer it wraps
        if isinstance(layer, nn.Linear):
            return rank - 1
        if isinstance(layer, _CHANNELS_FIRST):
            return 1
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    if node.op in ("call_method", "call_function") and source is not None and node.args and node.args[0] is source:
        moved = _moved_axis(name, node, axes[source], rank)
        if moved is not False:
            return moved
    if node.op == "call_function" and name == "linear":
        return rank - 1
    for arg in node.all_input_nodes:
        axis, arg_shape = axes.get(arg), _shape(arg)
        if axis is None:
            continue
        if len(arg_shape) == rank or tuple(arg_shape[:axis + 1]) == tuple(shape[:axis + 1]):
            return axis
    return None


def _moved_axis(name: str, node: fx.Node, axis: int, rank: int):
    """Where a permute / transpose / movedim puts `axis`; False for any other operation."""
    arguments = list(node.args[1:])
    if name == "permute":
        dims = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], (list, tuple)) else arguments
        dims = [d % rank for d in dims if isinstance(d, int)]
        return dims.index(axis) if len(dims) == rank and axis in dims else None
    if name in ("transpose", "swapaxes", "swapdims") and len(arguments) == 2 and all(isinstance(a, int) for a in arguments):
        first, second = (a % rank for a in arguments)
        return second if axis == first else first if axis == second else axis
    if name in ("movedim", "moveaxis") and len(arguments) == 2 and all(isinstance(a, int) for a in arguments):
        order = [d for d in range(rank) if d != arguments[0] % rank]
        order.insert(arguments[1] % rank, arguments[0] % rank)
        return order.index(axis)
    return False


def _resolution(node: fx.Node, axis: int) -> tuple[int, ...]:
    return tuple(size for index, size in enumerate(_shape(node)) if index not in (0, axis))


def _is_spatial_layer(module: nn.Module, shape: tuple[int, ...] | None) -> bool:
    from slimsearch.spaces.introspect import WEIGHTED_LAYERS
    from slimsearch.techniques.quantization import QuantizedLayer

    return shape is not None and len(shape) >= 3 and isinstance(module, (*WEIGHTED_LAYERS, QuantizedLayer))


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
