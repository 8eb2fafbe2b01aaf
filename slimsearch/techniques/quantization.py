"""Quantization-aware training: fake-quant wrappers with a straight-through estimator.

Each chosen conv / linear layer is replaced, under its own name, by a `QuantizedLayer` holding
the original layer. Its forward computes with the weight as it will be deployed:
- uniform, <= 8 bits: symmetric per-output-channel grid. Symmetric because int8 conv kernels
  (ONNX Runtime's QLinearConv) take per-channel weights only with zero point 0; per channel
  because the BatchNorm folded in at export scales each output channel, which maps a
  per-channel grid onto a per-channel grid exactly. At 8 bits the grid is -64..64, not
  -127..127 (ONNX Runtime's `reduce_range`): x86 CPUs without VNNI multiply uint8 inputs by
  int8 weights in pairs summed into 16 bits (VPMADDUBSW), which saturates past 32767; with
  full-range weights the digits teacher's deployed int8 model lost 5 points on a CI machine
  (94.7% against 99.7%); 255 x 64 x 2 stays below the limit on every CPU.
- kmeans, <= 8 bits: weight sharing (Deep Compression): 2^bits centroids and a fixed index per
  weight. The centroids are the trained parameters (their gradient is the sum over their
  weights, as in the paper); the indices are set once from the teacher's weights.
- 16 bits: weights rounded to float16.
Inputs of layers at <= 8 bits are fake-quantized to uint8 with per-tensor ranges, tracked
during training and set by `calibrate` from a few training batches, so the accuracy the search
sees includes activation rounding too.

The straight-through estimator is written as `x + (q(x) - x).detach()` with plain ops, so the
wrapped model still exports (ONNX, torch.export) without the fake-quant operators' int8-only limits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimsearch.spaces.quant import INTEGER_BITS, decode_choice

ACTIVATION_BITS = 8
EMA_MOMENTUM = 0.1  # activation ranges during training: a moving min/max, as torch.ao's observers do
KMEANS_ITERATIONS = 25
# Candidate clipping ratios for low-bit uniform grids: at 2-4 bits the max-abs grid wastes most
# levels on a few outliers, so each channel takes the ratio with the least squared error.
CLIP_RATIOS = torch.linspace(0.3, 1.0, 15)
# The ratios are tried several at a time, as one tensor op rather than 15 rounds of small ops
# (an epoch of mnist1d's model at 2-4 bits: 1.09 s against 1.28 s, float 0.59 s, after warm-up);
# at most this many elements at once bounds the memory for big layers.
CLIP_CHUNK_ELEMENTS = 2**22


# The 8-bit weight grid's largest level: see the module doc (ONNX Runtime's reduced int8 range).
INT8_WEIGHT_QMAX = 64


def weight_qmax(bits: int) -> int:
    """The largest level of a symmetric `bits`-bit weight grid (levels -qmax..qmax)."""
    return INT8_WEIGHT_QMAX if bits == INTEGER_BITS else 2 ** (bits - 1) - 1


def _ste(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    return x + (quantized - x).detach()


@torch.no_grad()
def channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step of a symmetric grid with levels -qmax..qmax."""
    qmax = weight_qmax(bits)
    flat = weight.detach().flatten(1)
    peak = flat.abs().amax(dim=1).clamp_min(1e-12)
    if bits >= INTEGER_BITS:
        return peak / qmax
    ratios = CLIP_RATIOS.to(weight.device, weight.dtype)
    scales = peak[None, :] * ratios[:, None] / qmax  # (ratios, channels)
    per_chunk = max(1, CLIP_CHUNK_ELEMENTS // flat.numel())
    errors = torch.cat([_grid_errors(flat, chunk, qmax) for chunk in scales.split(per_chunk)])
    return scales.gather(0, errors.argmin(0, keepdim=True))[0]


def _grid_errors(flat: torch.Tensor, scales: torch.Tensor, qmax: int) -> torch.Tensor:
    """(ratios, channels): the squared error of each channel of `flat` on each row of grid steps."""
    steps = scales[:, :, None]
    return ((torch.clamp(torch.round(flat / steps), -qmax, qmax) * steps - flat) ** 2).sum(2)


def uniform_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = weight_qmax(bits)
    scale = channel_scales(weight, bits).view(-1, *[1] * (weight.dim() - 1))
    return _ste(weight, torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale)


@torch.no_grad()
def kmeans_codebook(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids, index per weight) by Lloyd's algorithm from a linear initialisation, which
    Deep Compression found keeps the rare large weights that matter most."""
    values = weight.detach().flatten().float().cpu()
    centroids = torch.linspace(float(values.min()), float(values.max()), 2 ** bits)

    def nearest(centroids: torch.Tensor) -> torch.Tensor:
        # In one dimension, sorted centroids split the line at their midpoints: a binary search
        # instead of a (weights x centroids) distance matrix, which is slow at 8 bits.
        return torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)

    for _ in range(KMEANS_ITERATIONS):
        index = nearest(centroids)
        sums = torch.zeros_like(centroids).index_add_(0, index, values)
        counts = torch.zeros_like(centroids).index_add_(0, index, torch.ones_like(values))
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids).sort().values
    return centroids.to(weight.device, weight.dtype), nearest(centroids).view(weight.shape).to(weight.device)


class ActivationQuant(nn.Module):
    """uint8 per-tensor affine fake-quant of a layer's input, with a range that always holds 0."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:  # plain min / max over every calibration batch
            low, high = x.detach().min(), x.detach().max()
            if self.observed:
                low, high = torch.minimum(low, self.low), torch.maximum(high, self.high)
            self._set(low, high)
            return x
        if self.training:
            low, high = x.detach().min(), x.detach().max()
            if self.observed:
                low = self.low + EMA_MOMENTUM * (low - self.low)
                high = self.high + EMA_MOMENTUM * (high - self.high)
            self._set(low, high)
        levels = 2 ** ACTIVATION_BITS - 1
        low, high = self.low.clamp(max=0.0), self.high.clamp(min=0.0)
        scale = ((high - low) / levels).clamp_min(1e-8)
        zero_point = torch.round(-low / scale)
        rounded = _ste(x, (torch.clamp(torch.round(x / scale) + zero_point, 0, levels) - zero_point) * scale)
        # Not calibrated yet: nothing honest to round to. A select rather than an `if`, so that
        # torch.export can trace the layer without a data-dependent branch.
        return torch.where(self.observed, rounded, x)

    @torch.no_grad()
    def _set(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.low.copy_(low)
        self.high.copy_(high)
        self.observed.fill_(True)


class QuantizedLayer(nn.Module):
    """A conv / linear layer computing with its weight at `bits` (and `mode`), see the module doc."""

    def __init__(self, layer: nn.Module, bits: int, mode: str) -> None:
        super().__init__()
        self.layer = layer
        self.bits = bits
        self.mode = mode
        self.input_quant = ActivationQuant() if bits <= INTEGER_BITS else None
        if mode == "kmeans":
            centroids, index = kmeans_codebook(layer.weight, bits)
            self.codebook = nn.Parameter(centroids)
            self.register_buffer("codebook_index", index)
            layer.weight.requires_grad_(False)  # the codebook is what trains; see deployed_weight

    def __getattr__(self, name: str):
        # User models read their layers' attributes (`conv.out_channels`, `linear.in_features`);
        # the wrapper answers for the layer it wraps so such code keeps working.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["layer"], name)

    def quantized_weight(self) -> torch.Tensor:
        weight = self.layer.weight
        if self.mode == "kmeans":
            return self.codebook[self.codebook_index]
        if self.bits > INTEGER_BITS:
            return _ste(weight, weight.to(torch.float16).to(weight.dtype)) if self.bits == 16 else weight
        return uniform_quantize(weight, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        weight = self.quantized_weight()
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)

    def packed_bits(self) -> int:
        """Bits the deployed layer needs: weights at `bits`, plus per-channel scales (uniform) or
        the codebook (kmeans), the input's scale and zero point, and a 32-bit bias."""
        weight = self.layer.weight
        bits = weight.numel() * self.bits
        if self.mode == "uniform" and self.bits <= INTEGER_BITS:
            bits += weight.shape[0] * 32
        if self.mode == "kmeans":
            bits += 2 ** self.bits * 32
        if self.input_quant is not None:
            bits += 32 + 8
        if self.layer.bias is not None:
            bits += self.layer.bias.numel() * (16 if self.bits == 16 else 32)
        return bits

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode!r}"


def apply(model: nn.Module, choices: dict[str, object]) -> nn.Module:
    """Wrap the named layers in place; `choices` maps a layer name to '<bits>-<mode>'."""
    from slimsearch.techniques.replacement import stand_in_layers

    modules = dict(model.named_modules())
    # A layer replaced by a separable pair or low-rank factors is quantized as a whole: its
    # choice applies to every weighted layer standing in for it.
    targets = {name: stand_in_layers(model, name) for name in choices}
    unknown = sorted(name for name, layers in targets.items() if not layers)
    if unknown:
        raise ValueError(f"quant choices name layers that are not conv / linear layers of the model: {', '.join(unknown)}")
    for name, value in choices.items():
        bits, mode = decode_choice(value)
        if bits == 32:
            continue
        for layer_name in targets[name]:
            parent_name, _, attribute = layer_name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            setattr(parent, attribute, QuantizedLayer(modules[layer_name], bits, mode))
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLayer]:
    return {name: module for name, module in model.named_modules() if isinstance(module, QuantizedLayer)}


@torch.no_grad()
def calibrate(model: nn.Module, inputs: torch.Tensor, *, batches: int = 8, batch_size: int = 64) -> nn.Module:
    """Set activation ranges to the min / max seen on the first `batches` batches of `inputs`.

    Runs in eval mode, so BatchNorm statistics are left alone; a no-op without quantized inputs.
    """
    observers = [m for m in model.modules() if isinstance(m, ActivationQuant)]
    if not observers:
        return model
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    for observer in observers:
        observer.observed.fill_(False)
        observer.calibrating = True
    try:
        for batch in _calibration_batches(inputs, batches, batch_size):
            model(batch.to(device))
    finally:
        for observer in observers:
            observer.calibrating = False
        model.train(was_training)
    return model


def _calibration_batches(inputs: torch.Tensor, batches: int, batch_size: int) -> list[torch.Tensor]:
    return [inputs[start:start + batch_size] for start in range(0, min(len(inputs), batches * batch_size), batch_size)]


@torch.no_grad()
def input_ranges(model: nn.Module, inputs: torch.Tensor, layer_names, *, batches: int = 8,
                 batch_size: int = 64) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The min / max of each named layer's input in the float `model`, over the batches `calibrate` reads.

    What `calibrate` would set for that layer alone quantized: everything before it then computes
    in float. One pass for every layer, instead of one calibration pass per single-layer model
    (the sensitivity pass's quant probes: on resnet18 half a second each, 40 of them). A layer
    called more than once per forward is left out: its later calls may read its own quantized output.
    """
    modules = dict(model.named_modules())
    # The observers `calibrate` reads, fed from hooks: the same min / max over the same batches.
    observers = {name: ActivationQuant() for name in layer_names if name in modules}
    calls = dict.fromkeys(observers, 0)
    for observer in observers.values():
        observer.calibrating = True

    def observe(name):
        def hook(_module, args):
            observers[name](args[0])
            calls[name] += 1
        return hook

    handles = [modules[name].register_forward_pre_hook(observe(name)) for name in observers]
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    batches_run = 0
    try:
        for batch in _calibration_batches(inputs, batches, batch_size):
            model(batch.to(device))
            batches_run += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: (observer.low, observer.high) for name, observer in observers.items()
            if calls[name] == batches_run}


def calibrate_one_layer(model: nn.Module, ranges: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Set the activation range of `model`'s one quantized layer from `ranges` (`input_ranges` of
    the float model it was built from); False, changing nothing, when the model has more than one
    quantized layer or `ranges` lacks it (then `calibrate` it)."""
    observed = {name: layer.input_quant for name, layer in quantized_layers(model).items()
                if layer.input_quant is not None}
    if not observed:
        return True  # nothing to calibrate, as `calibrate` would find (it changes no mode then either)
    if len(observed) > 1 or next(iter(observed)) not in ranges:
        return False
    ((name, observer),) = observed.items()
    observer._set(*ranges[name])
    model.train(model.training)  # every module in the model's mode, as `calibrate` leaves them
    return True


@torch.no_grad()
def fold(model: nn.Module) -> nn.Module:
    """The plain float model that computes with the deployed weights: every wrapper is replaced by
    its layer, whose weight is set to the quantized values. The caller's model is not changed."""
    import copy

    folded = copy.deepcopy(model).cpu().eval()
    modules = dict(folded.named_modules())
    for name, wrapper in quantized_layers(folded).items():
        layer = wrapper.layer
        layer.weight = nn.Parameter(wrapper.quantized_weight().detach().clone(), requires_grad=False)
        parent_name, _, attribute = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else folded, attribute, layer)
    return folded
