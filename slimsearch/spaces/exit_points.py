"""Where a network can be cut for an early exit: after each stage, where one tensor carries all
that the rest of the network needs.

The model is traced with torch.fx (quantization wrappers stay opaque leaves). A node is a cut
point when no earlier value is still needed after it: in a residual block the block's input
stays live until the add, so cuts fall between blocks, never inside one. This works for
sequential and residual models alike (ResNet, MobileNetV2, the built-in CNNs) without knowing
how their code is organised. Stages are runs of equal spatial resolution, numbered as in
`introspect.stage_names`; the exit point of a stage is its last cut, and the last stage has none
(its exit would be the model's own head).
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
    position = {node: index for index, node in enumerate(nodes)}
    last_use = {node: max([position[user] for user in node.users], default=position[node]) for node in nodes}
    live: set[fx.Node] = set()
    cuts: list[tuple[fx.Node, tuple[int, ...]]] = []
    for index, node in enumerate(nodes):
        live.add(node)
        live = {value for value in live if last_use[value] > index}
        shape = _shape(node)
        if node.op not in ("placeholder", "output") and live == {node} and shape is not None and len(shape) >= 3:
            cuts.append((node, shape))
    resolutions: list[tuple[int, ...]] = []
    for node in nodes:
        shape = _shape(node)
        if shape is not None and len(shape) >= 3 and shape[2:] not in resolutions:
            resolutions.append(shape[2:])
    last_cut: dict[tuple[int, ...], tuple[fx.Node, tuple[int, ...]]] = {}
    for node, shape in cuts:
        last_cut[shape[2:]] = (node, shape)
    # An exit only pays if weighted spatial work remains after it; past the last conv, an exit
    # would read the same features as the model's own head.
    last_conv = max((position[node] for node in nodes if node.op == "call_module" and _is_spatial_layer(
        graph_module.get_submodule(node.target), _shape(node))), default=-1)
    return [ExitPoint(f"stage{resolutions.index(resolution) + 1}", node.name, shape)
            for resolution, (node, shape) in last_cut.items() if position[node] < last_conv]


def _is_spatial_layer(module: nn.Module, shape: tuple[int, ...] | None) -> bool:
    from slimsearch.spaces.introspect import WEIGHTED_LAYERS
    from slimsearch.techniques.quantization import QuantizedLayer

    return shape is not None and len(shape) >= 3 and isinstance(module, (*WEIGHTED_LAYERS, QuantizedLayer))


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
