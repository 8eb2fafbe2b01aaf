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
    """

    def __init__(self, channels: int, num_classes: int, dims: int, grid: int = GRID) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid) if dims == 2 else nn.AdaptiveAvgPool1d(grid)
        self.fc = nn.Linear(channels * grid ** dims, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


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
    heads = [ExitHead(point.shape[1], num_classes, dims=len(point.shape) - 2, grid=min(GRID, *point.shape[2:]))
             for point in chosen]
    segments = split(graph_module, [point.node for point in chosen], heads)
    return EarlyExitModel(segments, [p.stage for p in chosen], [live[p.stage] for p in chosen], criterion)


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
