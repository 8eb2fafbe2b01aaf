"""Low-rank factorisation knobs: a rank ratio per linear layer and 1 x 1 convolution.

The ratio is the share of the full rank min(out, in) kept; 1.0 keeps the layer whole (the
default). Each layer's knob offers the ratios of `space.rank_ratios` that factorise it
(techniques/lowrank.py: at a rank that saves parameters, MIN_RANK or more), one per rank: on a
small layer two ratios can round to the same rank, and a search would train that model twice.

The model's output layer is offered only ranks of at least OUTPUT_RANK_SHARE of its outputs:
factorised, it computes every class's logit from r numbers, and below about half the class
count that caps accuracy whatever the fine-tune does. Digits' head (10 classes), everything
else as the teacher has it, 3 epochs: rank 5 98.9% (teacher 99.4%), rank 2 52.1%, rank 1 (three
search trials that took it, whatever else they did) 20.1-20.6%.
"""

from __future__ import annotations

from slimsearch.spaces.introspect import output_layers, stage_names, trace_layers
from slimsearch.spaces.knobs import Choice, Knob, KnobFamily, Untouched, register_family
from slimsearch.techniques.lowrank import MIN_RANK, is_eligible, rank_for, shape_of

OUTPUT_RANK_SHARE = 0.5


@register_family
class LowRankFamily(KnobFamily):
    name = "lowrank"

    def discover(self, model, example_input, settings):
        ratios = tuple(sorted({1.0, *settings.rank_ratios}, reverse=True))
        calls = trace_layers(model, example_input)
        stages = stage_names(calls)
        outputs = {call.name for call in output_layers(calls)}
        knobs, untouched = [], []
        for name in dict.fromkeys(call.name for call in calls):
            layer = model.get_submodule(name)
            if not is_eligible(layer):
                continue  # k x k convolutions are the separable family's; nothing to report here
            least = OUTPUT_RANK_SHARE * shape_of(layer)[0] if name in outputs else 0  # rank_for keeps MIN_RANK
            offered = _one_ratio_per_rank(layer, ratios, least)
            if len(offered) == 1:
                reason = (f"its outputs are the model's outputs: no rank in space.rank_ratios of at least "
                          f"{OUTPUT_RANK_SHARE:g} of them saves parameters" if name in outputs else
                          f"no rank in space.rank_ratios saves parameters (ranks below {MIN_RANK} are not offered)")
                untouched.append(Untouched(self.name, name, reason))
                continue
            knobs.append(Knob(self.name, name, Choice(offered), default=1.0, extreme=min(offered),
                              stage=stages.get(name, "head")))
        return knobs, untouched


def _one_ratio_per_rank(layer, ratios: tuple[float, ...], least: float) -> tuple[float, ...]:
    """1.0, then each ratio (largest first) that factorises `layer` at a rank of `least` or more
    that no larger ratio gave."""
    offered, ranks = [1.0], set()
    for ratio in ratios:
        rank = rank_for(layer, ratio) if ratio < 1 else None
        if rank is not None and rank >= least and rank not in ranks:
            ranks.add(rank)
            offered.append(ratio)
    return tuple(offered)
