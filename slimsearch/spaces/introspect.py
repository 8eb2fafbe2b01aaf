"""What one forward pass tells about a model: call order, output shapes, stages, the head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class LayerTrace:
    name: str
    module: nn.Module
    output_shape: tuple[int, ...]
    input_shape: tuple[int, ...] = ()  # of its first input, when that is a tensor


@torch.no_grad()
def trace_layers(model: nn.Module, example_input: torch.Tensor) -> list[LayerTrace]:
    """Weighted layers in the order the forward pass calls them (a layer called twice appears
    twice), with their output shapes and their first input's."""
    names = {module: name for name, module in model.named_modules()}
    calls: list[LayerTrace] = []

    def record(module: nn.Module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            calls.append(LayerTrace(names[module], module, tuple(output.shape),
                                    tuple(first.shape) if first is not None else ()))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, WEIGHTED_LAYERS)]
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return calls


def output_layers(calls: list[LayerTrace]) -> list[LayerTrace]:
    """The last weighted layer called: its outputs are the model's outputs (e.g. class logits).

    Removing its output channels would change what the model predicts, so no family prunes it.
    """
    return calls[-1:]


def stage_names(calls: list[LayerTrace]) -> dict[str, str]:
    """Map each layer to a stage: layers producing the same spatial resolution share a stage.

    That is what "stage" means in ResNets and MobileNets (a run of blocks between
    downsamplings), and it needs no knowledge of how the model's code is organised.
    Layers without spatial output (linear heads) form the `head` stage.
    """
    resolutions: list[tuple[int, ...]] = []
    stages = {}
    for call in calls:
        spatial = call.output_shape[2:]
        if not spatial:
            stages[call.name] = "head"
            continue
        if spatial not in resolutions:
            resolutions.append(spatial)
        stages[call.name] = f"stage{resolutions.index(spatial) + 1}"
    return stages


def layer_stages(model: nn.Module, example_input: torch.Tensor) -> dict[str, str]:
    """Each weighted layer, in the order the forward pass first calls it, mapped to its stage."""
    calls = trace_layers(model, example_input)
    stages = stage_names(calls)
    return {call.name: stages.get(call.name, "head") for call in calls}
