"""Distillation knobs: the temperature and the soft/hard loss mix of the fine-tune."""

from __future__ import annotations

from slimsearch.spaces.knobs import FloatRange, Knob, KnobFamily, register_family


@register_family
class DistillFamily(KnobFamily):
    name = "distill"

    def discover(self, model, example_input, settings):
        t_low, t_high = settings.temperature
        a_low, a_high = settings.alpha
        t_default = min(max(4.0, t_low), t_high)
        a_default = min(max(0.5, a_low), a_high)
        return [
            Knob(self.name, "temperature", FloatRange(t_low, t_high), default=t_default, extreme=t_default),
            Knob(self.name, "alpha", FloatRange(a_low, a_high), default=a_default, extreme=a_default),
        ], []
