"""Execution precision: one run-wide knob, the dtype the whole deployed model computes in.

On a target that runs half precision (CUDA with a torch runtime: eager, torch.compile or CUDA
graphs) a candidate may run in float16 or bfloat16: the deployed model's weights and activations
are cast and its input and logits stay float32, so a caller sees no difference but speed and
rounding. Per-layer half precision is the quant family's 16-bit choice, which on those targets
computes the layer in float16 instead of only storing it so (evaluators/runtimes.py).

The knob's value is the dtype's name ("float32", "float16", "bfloat16"); `Space.discover` offers
it only on targets that run half precision and records why not elsewhere.
"""

from __future__ import annotations

from slimsearch.spaces.knobs import Choice, Knob, KnobFamily, register_family

TARGET = "dtype"  # the knob's target: one setting for the whole model
FLOAT32 = "float32"


@register_family
class PrecisionFamily(KnobFamily):
    name = "precision"

    def discover(self, model, example_input, settings):
        from slimsearch.config import PRECISIONS

        options = tuple(settings.precisions or PRECISIONS)
        default = FLOAT32 if FLOAT32 in options else options[0]
        # float16 is the fastest on the GPUs this targets (tensor cores, half the bytes), bf16 the safest.
        extreme = "float16" if "float16" in options else options[-1]
        ordered = (default, *(option for option in options if option != default))
        return [Knob(self.name, TARGET, Choice(ordered), default=default, extreme=extreme)], []
