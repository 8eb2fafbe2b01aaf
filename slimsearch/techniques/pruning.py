"""Structured pruning: physically remove channels with Torch-Pruning's dependency graph.

Kept apart, as Torch-Pruning itself does: *what* to remove (the channels with the smallest
group L2 magnitude, summed over every layer coupled to them), *how* (the DependencyGraph,
which keeps residual adds and depthwise convs consistent) and *how much* (the candidate's
ratio per group, rounded so the remaining width is a multiple of `round_to`, which keeps
CPU kernels on their vectorised paths).

We drive the graph group by group rather than through Torch-Pruning's high-level pruner: a
per-group ratio keyed by the group's root layer is exactly our knob, and the pruner's
ranking-scope rules would re-interpret it.
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.spaces.introspect import output_layers, trace_layers
from slimsearch.spaces.pruning import dependency_groups, out_channels, pruning_step
from slimsearch.techniques.replacement import origin_names


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """How many channels remain after removing `ratio` of them, rounded to `round_to` (at least one step)."""
    steps = max(1, round(channels * (1.0 - ratio) / round_to))
    return min(channels, steps * round_to)


def apply(model: nn.Module, ratios: dict[str, float], *, example_input: torch.Tensor, round_to: int = 8) -> nn.Module:
    """Prune `model` in place: `ratios` maps a group's root layer name to the share of channels removed."""
    import torch_pruning as tp

    ratios = {name: float(r) for name, r in ratios.items() if r > 0}
    if not ratios:
        return model
    modules = dict(model.named_modules())
    unknown = sorted(set(ratios) - set(modules))
    if unknown:
        raise ValueError(f"prune ratios name layers that are not in the model: {', '.join(unknown)}")
    heads = [call.module for call in output_layers(trace_layers(model, example_input))]
    graph, groups = dependency_groups(model, example_input, heads)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    names = {module: name for name, module in modules.items()}
    # A ratio is keyed by the teacher layer that rooted its group; after a substitution that
    # layer's outputs come from a sub-layer ("conv.pointwise"), which now sits in the group.
    origin = origin_names(model)
    for group_info in groups:
        root, members = group_info.root, group_info.members
        ratio = next((ratios[key] for key in (origin.get(names[m], names[m]) for m in [root, *members])
                      if key in ratios), None)
        if ratio is None:
            continue
        channels = out_channels(root)
        blocks = group_info.channel_groups
        remove = channels - kept_channels(channels, ratio, pruning_step(channels, blocks, round_to))
        if remove <= 0:
            continue
        prune_out = graph.get_pruner_of_module(root).prune_out_channels
        scores = importance(graph.get_pruning_group(root, prune_out, idxs=list(range(channels))))
        group = graph.get_pruning_group(root, prune_out, idxs=_weakest(scores, remove, blocks))
        if graph.check_pruning_group(group):
            group.prune()
    return model


def _weakest(scores: torch.Tensor, remove: int, blocks: int) -> list[int]:
    """The `remove` channels to remove; with channels in `blocks` equal blocks, the same positions
    in every block, ranked by their importance averaged over the blocks (so a grouped conv keeps
    equal groups, and its per-group weight layout stays valid)."""
    if blocks <= 1:
        return torch.argsort(scores)[:remove].tolist()
    size = len(scores) // blocks
    positions = torch.argsort(scores.view(blocks, size).mean(dim=0))[:remove // blocks]
    return sorted(int(position) + block * size for block in range(blocks) for position in positions)
