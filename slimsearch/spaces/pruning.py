"""Structured pruning knobs: one ratio per dependency group, found by Torch-Pruning.

A dependency group is the set of layers whose channels must be removed together (a residual
add couples every conv feeding it; a depthwise conv follows its producer). The knob is named
after the group's root layer, which is the layer Torch-Pruning ranks channels by.

Channels that come in blocks (the input or output of a grouped, not depthwise, convolution, or
a GroupNorm) are pruned alike in every block, as Torch-Pruning's own pruner does: a grouped
conv's weight holds one block's inputs per output, so the blocks must stay the same size.
A model whose graph Torch-Pruning cannot build (a channel shuffle's reshape, for one) offers
no pruning knob, with the reason, instead of failing the search. Discovery builds the graph with
the process's address space capped (`memory_capped`): on Swin V2 Torch-Pruning's index mappings
grow until the machine runs out of memory (24 GB here, and the kernel killed the search), and
under the cap that is a MemoryError, reported as the reason.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from slimsearch.spaces.introspect import WEIGHTED_LAYERS, output_layers, stage_names, trace_layers
from slimsearch.spaces.knobs import FloatRange, Knob, KnobFamily, Untouched, register_family


@dataclass(frozen=True)
class PruneGroup:
    root: nn.Module
    members: tuple[nn.Module, ...]  # the weighted layers losing output channels with the root
    channel_groups: int = 1  # the channels come in this many equal blocks, pruned alike


def dependency_groups(model: nn.Module, example_input: torch.Tensor, ignored: list[nn.Module]):
    """(Torch-Pruning's DependencyGraph, a PruneGroup per prunable group)."""
    import torch_pruning as tp

    with warnings.catch_warnings():
        # Parameters outside a layer (ConvNeXt's layer scale) are pruned along their last non-singleton
        # axis, their channels; Torch-Pruning says so on every build. The capability probe checks it.
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=WEIGHTED_LAYERS):
        root = group[0].dep.target.module
        members = tuple(item.dep.target.module for item in group
                        if graph.is_out_channel_pruning_fn(item.dep.handler)
                        and isinstance(item.dep.target.module, WEIGHTED_LAYERS))
        blocks = max([_channel_blocks(item.dep.target.module) for item in group], default=1)
        groups.append(PruneGroup(root, members, blocks))
    return graph, groups


def _channel_blocks(module: nn.Module) -> int:
    if isinstance(module, nn.GroupNorm):
        return module.num_groups
    groups = getattr(module, "groups", 1)
    if isinstance(module, nn.modules.conv._ConvNd) and groups > 1 and not module.in_channels == module.out_channels == groups:
        return groups  # grouped; a depthwise conv follows its channels one by one
    return 1


def pruning_step(channels: int, channel_groups: int, round_to: int) -> int:
    """Remaining widths are multiples of this: `round_to` (CPU kernels stay on their vectorised
    paths), and of the channel blocks where there are any, relaxed to the blocks alone when both
    together would leave nothing to choose."""
    if channel_groups <= 1:
        return round_to
    step = math.lcm(round_to, channel_groups)
    return step if channels >= 2 * step else channel_groups


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
        try:
            with memory_capped(GRAPH_MEMORY_SHARE):
                _, groups = dependency_groups(model, example_input, [call.module for call in heads])
        except Exception as error:  # Torch-Pruning follows channels through every op, or through none
            return [], [Untouched(self.name, "*", f"Torch-Pruning cannot build this model's dependency graph "
                                                  f"({_describe(error)}); no layer can be pruned")]
        knobs, untouched = [], []
        for head in heads:
            untouched.append(Untouched(self.name, head.name, "its outputs are the model's outputs"))
        domain = FloatRange(0.0, settings.max_prune_ratio, settings.prune_step)
        call_order = {call.name: index for index, call in enumerate(calls)}
        groups.sort(key=lambda group: call_order.get(names[group.root], len(call_order)))
        for group in groups:
            name = names[group.root]
            channels = out_channels(group.root)
            step = pruning_step(channels, group.channel_groups, settings.round_to)
            if channels < 2 * step:
                blocks = f" in {group.channel_groups} blocks" if group.channel_groups > 1 else ""
                untouched.append(Untouched(self.name, name, f"{channels} channels{blocks}: too few to prune in "
                                                            f"steps of {step} (round_to={settings.round_to})"))
                continue
            knobs.append(Knob(self.name, name, domain, default=0.0, extreme=settings.max_prune_ratio,
                              stage=stages.get(name, "head")))
        return knobs, untouched


# The share of the memory available at discovery that building the dependency graph may take.
# The graph of the largest model swept (vit_h_14, 2.5 GB of weights) needs far less: its forward
# pass at batch 1 and the graph's bookkeeping.
GRAPH_MEMORY_SHARE = 0.5


@contextlib.contextmanager
def memory_capped(share: float):
    """Inside the block the process may grow its address space by at most `share` of the memory
    available now; past that, allocations fail with MemoryError instead of the machine running
    out. Linux only (elsewhere, and when a tighter limit is already set, no cap)."""
    try:
        import resource

        grow = int(share * _available_bytes())
        current = _address_space_bytes()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        yield
        return
    cap = current + grow if hard == resource.RLIM_INFINITY else min(current + grow, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _available_bytes() -> int:
    """MemAvailable: what can be allocated without swapping (Linux's /proc/meminfo)."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def _address_space_bytes() -> int:
    """The process's virtual size, the figure RLIMIT_AS bounds (CUDA builds of torch map several GB unused)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _describe(error: BaseException) -> str:
    """'ZeroDivisionError in update_reshape_index_mapping: ...': the error and where it was raised."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    where = f" in {frames[-1].name}" if frames else ""
    message = (str(error).strip().splitlines() or [""])[0][:160]
    return f"{type(error).__name__}{where}" + (f": {message}" if message else "")
