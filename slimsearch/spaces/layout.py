"""What a candidate changes in the network, from shapes alone, for thousands of candidates at once.

Building a student to look at it takes from a fraction of a second to seconds (deep copies,
Torch-Pruning's dependency graph, k-means); the predictors and inner searches of the proposers
(search/predictors.py, search/proposals/) need these figures for thousands of candidates per
proposal. So the teacher's layer table is read once: every conv / linear layer with its channels,
kernel and feature-map sizes, which pruning group removes its output and its input channels,
and its stage. From it and an encoded candidate matrix (spaces/encoding.py) `Layout.features`
computes, per candidate: multiply-accumulates split by how they run (dense float, dense int8,
depthwise), weighted ops, activation elements, the activations entering int8 layers, weights
by how they are stored (float or int8), the float / int8 borders (their size and count), packed
weight bytes, and the same for every early-exit prefix.

Nothing here is a latency or an accuracy. Latency is fitted to these features from measured
trials (search/predictors.py); the features only have to be what drives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from slimsearch.spaces.encoding import Encoding
from slimsearch.spaces.exits import CRITERION, OFF
from slimsearch.spaces.introspect import WEIGHTED_LAYERS, LayerTrace, stage_names, trace_layers
from slimsearch.spaces.quant import decode_choice, INTEGER_BITS
from slimsearch.spaces.space import Space

FLOAT_BITS = 32
EXIT_GRID = 4  # techniques/exits.GRID: an exit head pools to at most this grid
# Latency features of one execution path, in this order (search/predictors.py fits weights to them).
# Weights by how they are stored: where feature maps are small (resnet18's last stages on 32 x 32
# inputs run at 2 x 2 and 1 x 1) a layer's time goes to reading its weights, not to arithmetic.
# Precision switches: the activations converted where a float layer and an integer one follow each
# other in execution order (ONNX Runtime fuses a chain of int8 layers, but quantises or
# dequantises at every border: on resnet18 at 32 x 32, int8 on every other conv ran at 0.97x the
# float model's time, against 0.65x for int8 everywhere). Switch count: how many such borders,
# each a quantise or dequantise node with a fixed cost per call whatever its size; in a heavily
# pruned model that cost is what is left (resnet18 pruned at 0.8: float 0.058x the teacher, int8
# everywhere 0.085x, int8 on every other layer 0.10x).
LATENCY_FEATURES = ("graph", "macs_float", "macs_int8", "macs_depthwise", "ops_float", "ops_int8",
                    "activations", "int8_inputs", "segments", "weights_float", "weights_int8", "precision_switches",
                    "switch_count")


@dataclass(frozen=True)
class LayerInfo:
    name: str
    c_in: int
    c_out: int
    kernel: int  # product of kernel sizes (1 for a linear layer)
    groups: int
    out_positions: int  # output elements per channel (spatial positions; 1 for a linear layer)
    in_positions: int
    stage: int  # 1-based stage as in introspect.stage_names; a large number for the head
    out_group: int | None  # encoding column of the prune knob removing its output channels
    in_group: int | None  # ... and its input channels
    has_bias: bool

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.c_in

    def base_macs(self) -> float:
        return float(self.out_positions * self.c_out * (self.c_in // self.groups) * self.kernel)


@dataclass(frozen=True)
class ExitInfo:
    column: int  # encoding column of the exit's knob
    stage: int
    channels: int
    group: int | None  # prune knob column of the channels the exit reads
    positions: int  # pooled grid cells the head reads


class Layout:
    def __init__(self, encoding: Encoding, layers: list[LayerInfo], others: list[tuple[int, int | None]],
                 exits: list[ExitInfo], num_classes: int, round_to: int):
        self.encoding, self.layers, self.exits = encoding, layers, exits
        self.num_classes, self.round_to = num_classes, round_to
        self._others = others  # (float elements, prune column) of BatchNorm and other non-layer parameters
        knobs = encoding.knobs
        self._prune = [c for c in encoding.columns("prune")]
        self._prune_channels = {c: _root_channels(layers, knobs[c].target) for c in self._prune}
        self._table = _LayerTable.build(encoding, layers, self._prune)
        self._teacher = self.features(encoding.default[None, :])

    @classmethod
    def discover(cls, space: Space, model: nn.Module, example_input: torch.Tensor, *, round_to: int) -> Layout:
        encoding = Encoding(space)
        calls = _first_calls(model, example_input)
        stages = stage_names(calls)
        modules = dict(model.named_modules())
        out_group, in_group, other_group = _prune_membership(model, example_input, encoding, [calls[-1].name] if calls else [])
        layers = []
        for call in calls:
            name, in_shape, out_shape = call.name, call.input_shape, call.output_shape
            layer = modules[name]
            linear = isinstance(layer, nn.Linear)
            stage = stages.get(name, "head")
            layers.append(LayerInfo(
                name=name, c_in=layer.in_features if linear else layer.in_channels,
                c_out=layer.out_features if linear else layer.out_channels,
                kernel=1 if linear else int(np.prod(layer.kernel_size)), groups=1 if linear else layer.groups,
                out_positions=int(np.prod(out_shape[2:])) if not linear else int(np.prod(out_shape[1:-1] or (1,))),
                in_positions=int(np.prod(in_shape[2:])) if not linear else int(np.prod(in_shape[1:-1] or (1,))),
                stage=int(stage.removeprefix("stage")) if stage.startswith("stage") else 10**6,
                out_group=out_group.get(name), in_group=in_group.get(name), has_bias=layer.bias is not None))
        others = []
        weighted = {layer.name for layer in layers}
        for name, module in modules.items():
            if name in weighted or isinstance(module, WEIGHTED_LAYERS):
                continue
            elements = sum(t.numel() for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]
                           if t.is_floating_point())
            if elements:
                others.append((elements, other_group.get(name)))
        with torch.no_grad():
            num_classes = int(model.eval()(example_input).shape[1])
        return cls(encoding, layers, others, _exit_infos(encoding, model, example_input, layers),
                   num_classes, round_to)

    # --- per candidate -------------------------------------------------------------------
    def keep(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        """Share of channels each prune group keeps, per row, as pruning rounds it (techniques/pruning.kept_channels)."""
        keep = {}
        for column in self._prune:
            channels = self._prune_channels[column]
            steps = np.maximum(1, np.round(channels * (1.0 - rows[:, column]) / self.round_to))
            keep[column] = np.minimum(channels, steps * self.round_to) / channels
        return keep

    def prune_channels(self, column: int) -> int:
        """Output channels of the layer rooting a prune knob's group."""
        return self._prune_channels[column]

    def keep_at(self, column: int, ratio: float) -> float:
        """The share of channels a prune knob keeps at `ratio`."""
        # The same rounding as `keep`, in plain floats: the allocation's walks ask thousands of times.
        channels = self._prune_channels[column]
        steps = max(1, round(channels * (1.0 - float(ratio)) / self.round_to))
        return min(channels, steps * self.round_to) / channels

    def features(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Cost features per row: "paths" (n, exits + 1, len(LATENCY_FEATURES)), the latency
        features of running up to each live exit (all-zero rows for exits that are off) and of the
        whole network last; "size_bytes" (n,); "macs" (n,); "exit_on" (n, exits).

        Computed on (rows x layers) arrays at once: the allocation's greedy walks call this a few
        hundred times per proposal, and a loop over layers took 2 s of a resnet18 proposal."""
        rows = np.atleast_2d(rows)
        n = len(rows)
        keep = self.keep(rows)
        shares = np.column_stack([*(keep[column] for column in self._prune), np.ones(n)])  # last: no group
        table = self._table
        c_out = table.c_out * shares[:, table.out_group]  # (n, layers)
        c_in = table.c_in * shares[:, table.in_group]
        bits = _lookup(rows, table.quant_column, table.bits)
        kmeans = _lookup(rows, table.quant_column, table.kmeans)
        separable = _lookup(rows, table.separable_column, table.separable).astype(bool)
        rank = _lookup(rows, table.lowrank_column, table.rank)
        integer = bits <= INTEGER_BITS
        depthwise, kernel, out_positions = table.depthwise, table.kernel, table.out_positions
        factorised = rank > 0
        per_group = c_in / table.groups
        dense = np.where(depthwise, 0.0, np.where(
            separable, out_positions * c_in * c_out,
            np.where(factorised, out_positions * rank * (c_in + c_out), out_positions * c_out * per_group * kernel)))
        depthwise_macs = np.where(depthwise, out_positions * c_out * kernel,
                                  np.where(separable, out_positions * c_in * kernel, 0.0))
        weights = np.where(depthwise, c_out * kernel, np.where(
            separable, c_in * c_out + c_in * kernel, np.where(factorised, rank * (c_in + c_out), c_out * per_group * kernel)))
        ops = np.where(~depthwise & (separable | factorised), 2.0, 1.0)
        # A border wherever a layer's precision differs from the one before it (the input is float).
        border = integer != np.column_stack([np.zeros(n, dtype=bool), integer[:, :-1]])
        inputs = table.in_positions * c_in
        feature = {name: index for index, name in enumerate(LATENCY_FEATURES)}
        per_layer = np.zeros((n, len(self.layers), len(LATENCY_FEATURES)))
        per_layer[:, :, feature["macs_float"]] = np.where(integer, 0.0, dense)
        per_layer[:, :, feature["macs_int8"]] = np.where(integer, dense, 0.0)
        per_layer[:, :, feature["macs_depthwise"]] = depthwise_macs
        per_layer[:, :, feature["ops_float"]] = np.where(integer, 0.0, ops)
        per_layer[:, :, feature["ops_int8"]] = np.where(integer, ops, 0.0)
        per_layer[:, :, feature["activations"]] = out_positions * c_out
        per_layer[:, :, feature["int8_inputs"]] = np.where(integer, inputs, 0.0)
        per_layer[:, :, feature["precision_switches"]] = np.where(border, inputs, 0.0)
        per_layer[:, :, feature["switch_count"]] = border
        per_layer[:, :, feature["weights_float"]] = np.where(integer, 0.0, weights)
        per_layer[:, :, feature["weights_int8"]] = np.where(integer, weights, 0.0)
        macs = (dense + depthwise_macs).sum(axis=1)
        bits_total = (weights * bits + _overhead_bits(bits, kmeans, c_out, ops, table.has_bias)).sum(axis=1)
        ones = np.ones(n)
        for elements, column in self._others:
            bits_total += elements * (keep[column] if column is not None else ones) * FLOAT_BITS
        exit_on = np.zeros((n, len(self.exits)), dtype=bool)
        paths = np.zeros((n, len(self.exits) + 1, len(LATENCY_FEATURES)))
        stage_of = np.array([layer.stage for layer in self.layers])
        live_before = np.zeros(n)
        for position, point in enumerate(self.exits):
            on = self._choice(rows, point.column, default=0) > 0  # option 0 is "off"
            exit_on[:, position] = on
            channels = point.channels * (keep[point.group] if point.group is not None else ones)
            head_macs = channels * point.positions * self.num_classes
            prefix = per_layer[:, stage_of <= point.stage, :].sum(axis=1)
            prefix[:, feature["macs_float"]] += head_macs
            prefix[:, feature["weights_float"]] += head_macs  # a linear head: one weight per multiply-accumulate
            prefix[:, feature["ops_float"]] += 1.0
            live_before += on
            prefix[:, feature["segments"]] = live_before
            paths[:, position, :] = np.where(on[:, None], prefix, 0.0)
            bits_total += np.where(on, (head_macs + self.num_classes) * FLOAT_BITS, 0.0)
        whole = per_layer.sum(axis=1)
        whole[:, feature["segments"]] = exit_on.sum(axis=1)
        paths[:, -1, :] = whole
        paths[:, :, feature["graph"]] = np.where(paths[:, :, feature["ops_float"]] + paths[:, :, feature["ops_int8"]] > 0,
                                                 1.0, 0.0)
        return {"paths": paths, "size_bytes": np.ceil(bits_total / 8), "macs": macs, "exit_on": exit_on}

    @property
    def teacher(self) -> dict[str, np.ndarray]:
        return self._teacher

    def exit_thresholds(self, rows: np.ndarray) -> np.ndarray:
        """(n, exits): each exit's threshold, 0 where it is off."""
        result = np.zeros((len(np.atleast_2d(rows)), len(self.exits)))
        for position, point in enumerate(self.exits):
            options = self.encoding.knobs[point.column].domain.options
            values = np.array([0.0 if option == OFF else float(option) for option in options])
            result[:, position] = values[np.atleast_2d(rows)[:, point.column].astype(int)]
        return result

    # --- helpers ---------------------------------------------------------------------------
    def _choice(self, rows: np.ndarray, column: int | None, *, default) -> np.ndarray:
        if column is None:
            return np.full(len(rows), default)
        return rows[:, column].astype(int)


@dataclass(frozen=True)
class _LayerTable:
    """The layer table as arrays over layers, and per layer a lookup from its knobs' option
    indices to what they mean (bits, k-means, separable, rank), padded to the widest knob."""

    c_in: np.ndarray
    c_out: np.ndarray
    kernel: np.ndarray
    groups: np.ndarray
    out_positions: np.ndarray
    in_positions: np.ndarray
    depthwise: np.ndarray
    has_bias: np.ndarray
    out_group: np.ndarray  # position among the prune columns, or their count for no group
    in_group: np.ndarray
    quant_column: np.ndarray  # encoding column, -1 for none
    bits: np.ndarray  # (layers, options)
    kmeans: np.ndarray
    separable_column: np.ndarray
    separable: np.ndarray
    lowrank_column: np.ndarray
    rank: np.ndarray

    @classmethod
    def build(cls, encoding: Encoding, layers: list[LayerInfo], prune_columns: list[int]) -> _LayerTable:
        from slimsearch.techniques.lowrank import rank_for_shape

        knobs = encoding.knobs
        position = {column: index for index, column in enumerate(prune_columns)}

        def column_of(family: str, layer: LayerInfo) -> int:
            column = encoding.column(family, layer.name)
            return -1 if column is None else column

        def options(column: int) -> tuple:
            return knobs[column].domain.options if column >= 0 else ()

        quant = [column_of("quant", layer) for layer in layers]
        separable = [column_of("separable", layer) for layer in layers]
        lowrank = [column_of("lowrank", layer) for layer in layers]
        decoded = [[decode_choice(option) for option in options(column)] or [(FLOAT_BITS, "uniform")] for column in quant]
        return cls(
            c_in=np.array([layer.c_in for layer in layers], dtype=float),
            c_out=np.array([layer.c_out for layer in layers], dtype=float),
            kernel=np.array([layer.kernel for layer in layers], dtype=float),
            groups=np.array([layer.groups for layer in layers], dtype=float),
            out_positions=np.array([layer.out_positions for layer in layers], dtype=float),
            in_positions=np.array([layer.in_positions for layer in layers], dtype=float),
            depthwise=np.array([layer.depthwise for layer in layers], dtype=bool),
            has_bias=np.array([layer.has_bias for layer in layers], dtype=bool),
            out_group=np.array([position.get(layer.out_group, len(prune_columns)) for layer in layers], dtype=int),
            in_group=np.array([position.get(layer.in_group, len(prune_columns)) for layer in layers], dtype=int),
            quant_column=np.array(quant, dtype=int),
            bits=_padded([[bits for bits, _ in choices] for choices in decoded]),
            kmeans=_padded([[1 if mode == "kmeans" else 0 for _, mode in choices] for choices in decoded]),
            separable_column=np.array(separable, dtype=int),
            # An option index other than 0 (False) is on, as the encoding orders the choice.
            separable=_padded([[index != 0 for index in range(len(options(column)))] or [False] for column in separable]),
            lowrank_column=np.array(lowrank, dtype=int),
            rank=_padded([[0 if ratio >= 1 else (rank_for_shape(layer.c_out, layer.c_in, ratio) or 0)
                           for ratio in options(column)] or [0] for column, layer in zip(lowrank, layers)]),
        )


def _padded(values: list[list]) -> np.ndarray:
    """(layers, widest) float array of ragged per-layer lookups (padding never indexed)."""
    table = np.zeros((len(values), max((len(v) for v in values), default=1)))
    for index, row in enumerate(values):
        table[index, :len(row)] = row
    return table


def _lookup(rows: np.ndarray, columns: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(n, layers): each layer's table entry for the option index in its column (entry 0 for none)."""
    codes = rows[:, np.maximum(columns, 0)].astype(int)
    codes[:, columns < 0] = 0
    return table[np.arange(table.shape[0])[None, :], codes]


def _overhead_bits(bits: np.ndarray, kmeans: np.ndarray, c_out: np.ndarray, ops: np.ndarray, has_bias: np.ndarray) -> np.ndarray:
    """What a layer stores besides its weights, as techniques/quantization.QuantizedLayer.packed_bits
    counts it: per-channel scales or a codebook, the input's scale and zero point, the bias."""
    integer = bits <= INTEGER_BITS
    extra = np.where(integer & (kmeans == 0), c_out * 32, 0.0) * ops
    extra += np.where(kmeans == 1, 2.0 ** bits * 32, 0.0) * ops
    extra += np.where(integer, 40.0, 0.0) * ops
    return extra + np.where(has_bias, c_out * np.where(bits == 16, 16, 32), 0.0)


def _first_calls(model: nn.Module, example_input: torch.Tensor) -> list[LayerTrace]:
    """Each weighted layer's first call in the forward pass (with a tensor input), in call order."""
    first: dict[str, LayerTrace] = {}
    for call in trace_layers(model, example_input):
        if call.input_shape and call.name not in first:
            first[call.name] = call
    return list(first.values())


def _prune_membership(model: nn.Module, example_input: torch.Tensor, encoding: Encoding, heads: list[str]):
    """Which prune knob (its encoding column) removes each layer's output channels and input
    channels, and each other parameter-holding module's channels (BatchNorm)."""
    out_group: dict[str, int] = {}
    in_group: dict[str, int] = {}
    other_group: dict[str, int] = {}
    columns = {encoding.knobs[c].target: c for c in encoding.columns("prune")}
    if not columns:
        return out_group, in_group, other_group
    import torch_pruning as tp

    names = {module: name for name, module in model.named_modules()}
    modules = dict(model.named_modules())
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    for root_name, column in columns.items():
        root = modules[root_name]
        prune_out = graph.get_pruner_of_module(root).prune_out_channels
        for item in graph.get_pruning_group(root, prune_out, idxs=[0]):
            target = item.dep.target.module
            name = names.get(target)
            if name is None:
                continue
            if isinstance(target, WEIGHTED_LAYERS):
                if graph.is_out_channel_pruning_fn(item.dep.handler):
                    out_group.setdefault(name, column)
                elif graph.is_in_channel_pruning_fn(item.dep.handler):
                    in_group.setdefault(name, column)
            else:
                other_group.setdefault(name, column)
    return out_group, in_group, other_group


def _root_channels(layers: list[LayerInfo], root: str) -> int:
    for layer in layers:
        if layer.name == root:
            return layer.c_out
    raise ValueError(f"prune knob {root!r} names no conv / linear layer of the model")


def _exit_infos(encoding: Encoding, model: nn.Module, example_input: torch.Tensor, layers: list[LayerInfo]) -> list[ExitInfo]:
    columns = {encoding.knobs[c].target: c for c in encoding.columns("exits")
               if encoding.knobs[c].target != CRITERION}
    if not columns:
        return []
    from slimsearch.spaces.exit_points import find_exit_points, trace

    infos = []
    for point in find_exit_points(trace(model), example_input):
        if point.stage not in columns:
            continue
        stage = int(point.stage.removeprefix("stage"))
        channels = point.shape[1]
        # The channels an exit reads are those the stage's last layer of that width writes.
        producer = next((layer for layer in reversed(layers) if layer.stage == stage and layer.c_out == channels), None)
        grid = min(EXIT_GRID, *point.shape[2:])
        infos.append(ExitInfo(columns[point.stage], stage, channels, producer.out_group if producer else None,
                              grid ** (len(point.shape) - 2)))
    return sorted(infos, key=lambda info: info.stage)
