"""Modules that stand in for one teacher layer (a separable pair, two low-rank factors).

Knobs are named after the teacher's layers, so the transforms that run after a substitution
(pruning, quantization) must find what became of a layer: `stand_in_layers` gives the weighted
layers now doing its work, and `origin_names` maps the layer producing a replacement's outputs
back to the teacher layer it replaced, which is how a prune ratio keeps its meaning.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from slimsearch.spaces.introspect import WEIGHTED_LAYERS


class Replacement(nn.Module):
    """Base class of stand-ins; `output_layer` is the attribute holding the layer whose output
    channels are the replaced layer's output channels."""

    output_layer: ClassVar[str]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, new)


def origin_names(model: nn.Module) -> dict[str, str]:
    """`"<layer>.pointwise" -> "<layer>"` for every replacement in `model`."""
    return {f"{name}.{module.output_layer}": name for name, module in model.named_modules()
            if isinstance(module, Replacement)}


def stand_in_layers(model: nn.Module, name: str) -> list[str]:
    """The weighted layers that do the work of the teacher's layer `name` in `model`: the layer
    itself, or every weighted layer of the replacement standing in for it. Empty if unknown."""
    modules = dict(model.named_modules())
    module = modules.get(name)
    if isinstance(module, WEIGHTED_LAYERS):
        return [name]
    if isinstance(module, Replacement):
        return [f"{name}.{child}" for child, layer in module.named_modules()
                if child and isinstance(layer, WEIGHTED_LAYERS)]
    return []
