"""Depthwise-separable substitution knobs: on / off per eligible convolution (k > 1, groups = 1)."""

from __future__ import annotations

from slimsearch.spaces.introspect import layer_stages
from slimsearch.spaces.knobs import Choice, Knob, KnobFamily, Untouched, register_family
from slimsearch.techniques.separable import is_eligible


@register_family
class SeparableFamily(KnobFamily):
    name = "separable"

    def discover(self, model, example_input, settings):
        knobs, untouched = [], []
        for name, stage in layer_stages(model, example_input).items():
            layer = model.get_submodule(name)
            if is_eligible(layer):
                knobs.append(Knob(self.name, name, Choice((False, True)), default=False, extreme=True, stage=stage))
            elif hasattr(layer, "kernel_size"):
                reason = ("already depthwise or grouped" if layer.groups != 1 else
                          "a 1 x 1 kernel" if all(k == 1 for k in layer.kernel_size) else
                          f"padding mode {layer.padding_mode!r}")
                untouched.append(Untouched(self.name, name, reason))
        return knobs, untouched
