"""Depthwise-separable substitution knobs: on / off per eligible convolution (k > 1, groups = 1)."""

from __future__ import annotations

from slimsearch.spaces.introspect import stage_names, trace_layers
from slimsearch.spaces.knobs import Choice, Knob, KnobFamily, Untouched, register_family
from slimsearch.techniques.separable import is_eligible


@register_family
class SeparableFamily(KnobFamily):
    name = "separable"

    def discover(self, model, example_input, settings):
        calls = trace_layers(model, example_input)
        stages = stage_names(calls)
        knobs, untouched = [], []
        for name in dict.fromkeys(call.name for call in calls):
            layer = model.get_submodule(name)
            if is_eligible(layer):
                knobs.append(Knob(self.name, name, Choice((False, True)), default=False, extreme=True,
                                  stage=stages.get(name, "head")))
            elif hasattr(layer, "kernel_size"):
                reason = ("already depthwise or grouped" if layer.groups != 1 else
                          "a 1 x 1 kernel" if all(k == 1 for k in layer.kernel_size) else
                          f"padding mode {layer.padding_mode!r}")
                untouched.append(Untouched(self.name, name, reason))
        return knobs, untouched
