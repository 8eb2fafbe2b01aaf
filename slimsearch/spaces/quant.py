"""Quantization knobs: one bit width and weight mode per conv / linear layer.

A knob's value is a string "<bits>-<mode>" ("32-float", "16-float", "8-uniform", "4-kmeans"):
Optuna's categorical values must be JSON primitives, and one Choice per layer keeps the
sampler adapter generic and ties (stage / global granularity) working unchanged. The
transform decodes it with `decode_choice`, which also accepts the long form
`{"bits": 8, "mode": "uniform"}` for hand-written candidates.
"""

from __future__ import annotations

from typing import Any

from slimsearch.errors import ConfigError
from slimsearch.spaces.introspect import layer_stages
from slimsearch.spaces.knobs import Choice, Knob, KnobFamily, Untouched, register_family

FLOAT_MODE = "float"  # 32 and 16 bits: a floating-point format, no grid and no codebook
INTEGER_BITS = 8  # at or below this many bits a layer runs as int8 kernels when deployed


def encode_choice(bits: int, mode: str) -> str:
    return f"{bits}-{FLOAT_MODE if bits > INTEGER_BITS else mode}"


def decode_choice(value: Any) -> tuple[int, str]:
    """(bits, mode) from a knob value: "8-uniform", {"bits": 8, "mode": "uniform"}, or a bare 32 / 16."""
    from slimsearch.config import QUANT_BITS, QUANT_MODES

    try:
        if isinstance(value, dict):
            bits, mode = int(value["bits"]), str(value.get("mode", "uniform"))
        elif isinstance(value, int) and not isinstance(value, bool):
            bits, mode = value, "uniform"
        else:
            bits_text, mode = str(value).split("-", 1)
            bits = int(bits_text)
    except (KeyError, TypeError, ValueError):
        bits, mode = None, None
    if bits in QUANT_BITS and bits > INTEGER_BITS:
        return bits, FLOAT_MODE
    if bits not in QUANT_BITS or mode not in QUANT_MODES:
        raise ConfigError(
            f"invalid quantization choice {value!r}: expected '<bits>-<mode>' with bits in "
            f"{', '.join(map(str, QUANT_BITS))} and mode in {', '.join(QUANT_MODES)} (e.g. '8-uniform')"
        )
    return bits, mode


def quant_options(settings) -> tuple[str, ...]:
    """Every (bits, mode) combination the settings allow, widest first (so 32-float leads)."""
    options = []
    for bits in sorted(settings.bits, reverse=True):
        modes = [FLOAT_MODE] if bits > INTEGER_BITS else list(settings.quant_modes)
        options += [encode_choice(bits, mode) for mode in modes]
    return tuple(dict.fromkeys(options))


def pinned_layers(module_names: list[str], layer_names: list[str], pins: tuple[str, ...]) -> dict[str, str]:
    """Layer -> the pin_float entry covering it. A pin names a layer or any module above layers
    (pinning "stem" pins every layer in it); a name that is not in the model is refused."""
    known = set(module_names)
    for pin in pins:
        if pin not in known:
            listed = ", ".join(repr(name) for name in dict.fromkeys(layer_names[:3] + layer_names[-2:]))
            raise ConfigError(f"space.pin_float names {pin!r}, which is not a module of this model; "
                              f"allowed: module names such as {listed}")
    covered = {}
    for layer in layer_names:
        for pin in pins:
            if layer == pin or layer.startswith(pin + "."):
                covered[layer] = pin
    return covered


@register_family
class QuantFamily(KnobFamily):
    name = "quant"

    def discover(self, model, example_input, settings):
        stages = layer_stages(model, example_input)
        layer_names = list(stages)
        module_names = [name for name, _ in model.named_modules() if name]
        pinned = pinned_layers(module_names, layer_names, settings.pin_float)
        options = quant_options(settings)
        # Default: the widest width (the teacher's numerics when 32 is allowed). Extreme: the fewest
        # bits, uniform, which deploys as int8: the fastest form these runtimes have.
        lowest = min(settings.bits)
        extreme = encode_choice(lowest, "uniform" if "uniform" in settings.quant_modes else settings.quant_modes[0])
        knobs, untouched = [], []
        for name in layer_names:
            if "/" in name:  # the deployment form finds layers by ONNX scope names, which '/' splits
                untouched.append(Untouched(self.name, name, "its name contains '/', which ONNX scope names cannot carry"))
                continue
            if name in pinned:
                untouched.append(Untouched(self.name, name, f"pinned to float by space.pin_float ({pinned[name]!r})"))
                continue
            knobs.append(Knob(self.name, name, Choice(options), default=options[0], extreme=extreme,
                              stage=stages[name]))
        return knobs, untouched
