"""Structured pruning knobs: one ratio per dependency group, found by Torch-Pruning.

A dependency group is the set of layers whose channels must be removed together (a residual
add couples every conv feeding it; a depthwise conv follows its producer). The knob is named
after the group's root layer, which is the layer Torch-Pruning ranks channels by.
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.spaces.introspect import WEIGHTED_LAYERS, output_layers, stage_names, trace_layers
from slimsearch.spaces.knobs import FloatRange, Knob, KnobFamily, Untouched, register_family


def dependency_groups(model: nn.Module, example_input: torch.Tensor, ignored: list[nn.Module]):
    """(root module, [modules whose output channels the group removes]) per prunable group."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=WEIGHTED_LAYERS):
        root = group[0].dep.target.module
        members = [item.dep.target.module for item in group
                   if graph.is_out_channel_pruning_fn(item.dep.handler) and isinstance(item.dep.target.module, WEIGHTED_LAYERS)]
        groups.append((root, members))
    return graph, groups


def out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


@register_family
class PruneFamily(KnobFamily):
    name = "prune"

    def discover(self, model, example_input, settings):
        calls = trace_layers(model, example_input)
        heads = output_layers(calls)
        stages = stage_names(calls)
        names = {module: name for name, module in model.named_modules()}
        _, groups = dependency_groups(model, example_input, [call.module for call in heads])
        knobs, untouched = [], []
        for head in heads:
            untouched.append(Untouched(self.name, head.name, "its outputs are the model's outputs"))
        domain = FloatRange(0.0, settings.max_prune_ratio, settings.prune_step)
        call_order = {call.name: index for index, call in enumerate(calls)}
        groups.sort(key=lambda group: call_order.get(names[group[0]], len(call_order)))
        for root, _members in groups:
            name = names[root]
            channels = out_channels(root)
            if channels < 2 * settings.round_to:
                untouched.append(Untouched(self.name, name,
                                           f"{channels} channels: too few to prune in steps of round_to={settings.round_to}"))
                continue
            knobs.append(Knob(self.name, name, domain, default=0.0, extreme=settings.max_prune_ratio,
                              stage=stages.get(name, "head")))
        return knobs, untouched
