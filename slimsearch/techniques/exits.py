"""Early exits: the network cut into segments at chosen exit points, a small head after each.

`EarlyExitModel` runs the segments in order. Segment k (all but the last) returns the tensor
the next segment needs and its exit head's logits; the last returns the model's logits. While
training, `exit_logits` gives every head's logits so each is distilled from the teacher in the
same fine-tune. In eval mode a sample leaves at the first exit whose confidence reaches its
threshold; with one sample (batch 1, how exits are deployed) the later segments are not run.

Thresholds are applied after training, so trying other thresholds needs no retraining:
`exit_outcomes` re-scores cached per-exit logits for any thresholds.
"""

from __future__ import annotations

import math
import operator
import zlib

import torch
import torch.nn.functional as F
from torch import fx, nn

from slimsearch.spaces.exit_points import find_exit_points, trace
from slimsearch.spaces.exits import CRITERIA, CRITERION, OFF

HEAD_NAME = "exit_head"
GRID = 4


def confidence(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """Per-sample confidence in [0, 1]: the top softmax probability, or 1 - entropy / log(classes)."""
    probabilities = F.softmax(logits.float(), dim=1)
    if criterion == "max_prob":
        return probabilities.max(dim=1).values
    if criterion == "entropy":
        entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)
        return 1.0 - entropy / math.log(logits.shape[1])
    raise ValueError(f"exit criterion must be one of {', '.join(CRITERIA)}, but got {criterion!r}")


def exit_outcomes(all_logits: list[torch.Tensor], thresholds: list[float], criterion: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the logits each sample leaves with, the index of the exit it leaves at) for every exit's
    logits (final last) and one threshold per early exit."""
    chosen = all_logits[-1].clone()
    taken = torch.full((len(chosen),), len(all_logits) - 1, dtype=torch.long)
    pending = torch.ones(len(chosen), dtype=torch.bool)
    for index, (logits, threshold) in enumerate(zip(all_logits[:-1], thresholds)):
        leaving = pending & (confidence(logits, criterion).cpu() >= threshold)
        chosen[leaving] = logits[leaving.to(logits.device)].to(chosen.dtype)
        taken[leaving] = index
        pending &= ~leaving
    return chosen, taken


class ExitHead(nn.Module):
    """Average pooling to a coarse grid and one linear layer: cheap enough to be worth its exit.

    A coarse grid rather than one global average: early features say *where* strokes are more
    than *what* they form, and a global average throws that away (on digits a globally pooled
    head after the first stage was right on about a quarter of the samples).

    The pooling is torch's adaptive average pooling, written so that it exports at any map size
    and layout: where the grid divides the map it is one fixed average pool (what ONNX export
    makes of adaptive pooling then), elsewhere (a 13 x 13 map to 4 x 4) the same overlapping
    bins as slices and means, which ONNX's AveragePool cannot express and the exporter refuses
    for adaptive pooling. A channels-last input (N, H, W, C) is moved to channels-first first,
    so the linear layer always reads channel-major features.
    """

    def __init__(self, channels: int, num_classes: int, spatial: tuple[int, ...], *, channel_axis: int = 1,
                 grid: int = GRID) -> None:
        super().__init__()
        self.channel_axis = channel_axis
        self.spatial = tuple(int(size) for size in spatial)
        self.grid = max(1, min(grid, *self.spatial))
        self.fc = nn.Linear(channels * self.grid ** len(self.spatial), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_axis != 1:
            x = x.movedim(self.channel_axis, 1)
        return self.fc(torch.flatten(self._pool(x), 1))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        grid, dims = self.grid, len(self.spatial)
        if all(size % grid == 0 for size in self.spatial) and dims <= 3:
            kernel = tuple(size // grid for size in self.spatial)
            if all(k == 1 for k in kernel):
                return x
            return (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1](x, kernel, kernel)
        for axis, size in enumerate(self.spatial, start=2):
            if size == grid:
                continue
            # Bin i covers [floor(i * size / grid), ceil((i + 1) * size / grid)), as in torch's
            # adaptive pooling, so the two agree exactly.
            bins = [(i * size // grid, -(-(i + 1) * size // grid)) for i in range(grid)]
            x = torch.cat([x.narrow(axis, start, end - start).mean(axis, keepdim=True) for start, end in bins], dim=axis)
        return x


class EarlyExitModel(nn.Module):
    def __init__(self, segments: list[nn.Module], exit_points: list[str], thresholds: list[float], criterion: str):
        super().__init__()
        if len(exit_points) != len(segments) - 1 or len(thresholds) != len(exit_points):
            raise ValueError("an early-exit model needs one exit point and threshold between each pair of segments")
        self.segments = nn.ModuleList(segments)
        self.exit_points = list(exit_points)
        self.thresholds = [float(t) for t in thresholds]
        self.criterion = criterion

    def exit_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits, the final output last."""
        outputs = []
        for segment in self.segments[:-1]:
            x, logits = segment(x)
            outputs.append(logits)
        outputs.append(self.segments[-1](x))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.exit_logits(x)[-1]
        if x.shape[0] == 1:  # deployed form: stop at the first confident exit
            for segment, threshold in zip(self.segments[:-1], self.thresholds):
                x, logits = segment(x)
                if float(confidence(logits, self.criterion)[0]) >= threshold:
                    return logits
            return self.segments[-1](x)
        return exit_outcomes(self.exit_logits(x), self.thresholds, self.criterion)[0]


def live_exits(choices: dict[str, object]) -> dict[str, float]:
    """Stage -> threshold for the exits a candidate turns on."""
    return {stage: float(value) for stage, value in choices.items() if stage != CRITERION and value != OFF}


def apply(model: nn.Module, choices: dict[str, object], *, example_input: torch.Tensor, num_classes: int | None = None) -> nn.Module:
    """`model` cut at the candidate's live exits, with a fresh head at each; unchanged if none is on."""
    live = live_exits(choices)
    if not live:
        return model
    criterion = str(choices.get(CRITERION, CRITERIA[0]))
    if criterion not in CRITERIA:
        raise ValueError(f"exit criterion must be one of {', '.join(CRITERIA)}, but got {criterion!r}")
    graph_module = trace(model)
    points = {point.stage: point for point in find_exit_points(graph_module, example_input)}
    unknown = sorted(set(live) - set(points))
    if unknown:
        raise ValueError(f"exits name stages without an exit point: {', '.join(unknown)}; "
                         f"this model has {', '.join(points) or 'none'}")
    chosen = sorted((points[stage] for stage in live), key=lambda point: int(point.stage.removeprefix("stage")))
    if num_classes is None:
        with torch.no_grad():
            num_classes = model.eval()(example_input).shape[1]
    heads = [_head(point, num_classes) for point in chosen]
    segments = split(graph_module, [point.node for point in chosen], heads)
    return EarlyExitModel(segments, [p.stage for p in chosen], [live[p.stage] for p in chosen], criterion)


def _head(point, num_classes: int) -> ExitHead:
    """A fresh head, initialised from a seed of its stage's name: the global random state differs
    from one study (and trial) to the next, and a candidate must train the same in any of them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(point.stage.encode()))
        return ExitHead(point.channels, num_classes, point.spatial, channel_axis=point.channel_axis)


def split(graph_module: fx.GraphModule, cut_nodes: list[str], heads: list[nn.Module]) -> list[fx.GraphModule]:
    """Segments of `graph_module` ending at each cut node (returning (tensor, head logits)), then the rest."""
    nodes = list(graph_module.graph.nodes)
    names = [node.name for node in nodes]
    boundaries = [names.index(name) for name in cut_nodes]
    segments = []
    start = 0
    for index, end in enumerate([*boundaries, len(nodes) - 1]):
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        if start == 0:
            body = nodes[:end + 1]
        else:
            env[nodes[start - 1]] = graph.placeholder("x")
            body = nodes[start:end + 1]
        last = index == len(boundaries)
        for node in body:
            if node.op == "output":
                graph.output(fx.map_arg(node.args[0], lambda n: env[n]))
                continue
            env[node] = graph.node_copy(node, lambda n: env[n])
        modules = {node.target: graph_module.get_submodule(node.target) for node in body if node.op == "call_module"}
        attributes = {node.target: operator.attrgetter(node.target)(graph_module) for node in body if node.op == "get_attr"}
        if not last:
            cut = env[nodes[end]]
            logits = graph.call_module(HEAD_NAME, (cut,))
            graph.output((cut, logits))
            modules[HEAD_NAME] = heads[index]
        segments.append(fx.GraphModule({**modules, **attributes}, graph, class_name=f"Segment{index}"))
        start = end + 1
    return segments
