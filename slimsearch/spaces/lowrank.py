"""Low-rank factorisation knobs: a rank ratio per linear layer and 1 x 1 convolution.

The ratio is the share of the full rank min(out, in) kept; 1.0 keeps the layer whole (the
default). A ratio whose rank would not save parameters on a layer leaves it whole too, see
techniques/lowrank.py, so one grid of ratios serves layers of every shape.
"""

from __future__ import annotations

from slimsearch.spaces.introspect import layer_stages
from slimsearch.spaces.knobs import Choice, Knob, KnobFamily, Untouched, register_family
from slimsearch.techniques.lowrank import is_eligible, rank_for


@register_family
class LowRankFamily(KnobFamily):
    name = "lowrank"

    def discover(self, model, example_input, settings):
        ratios = tuple(sorted({1.0, *settings.rank_ratios}, reverse=True))
        knobs, untouched = [], []
        for name, stage in layer_stages(model, example_input).items():
            layer = model.get_submodule(name)
            if not is_eligible(layer):
                continue  # k x k convolutions are the separable family's; nothing to report here
            if all(rank_for(layer, ratio) is None for ratio in ratios):
                untouched.append(Untouched(self.name, name, "no rank in space.rank_ratios saves parameters"))
                continue
            knobs.append(Knob(self.name, name, Choice(ratios), default=1.0, extreme=min(ratios), stage=stage))
        return knobs, untouched
