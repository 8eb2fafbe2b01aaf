"""The torch runtimes a model is deployed on: eager, torch.compile (inductor), CUDA graphs.

On a GPU, eager PyTorch at batch 1 is bound by Python and kernel launches, so a latency taken
there says little about the model; deployments replay the model as a CUDA graph (by hand, or
through torch.compile's reduce-overhead mode) and that is what these runtimes time:

- `torch`: eager, as before;
- `torch-compile`: torch.compile with inductor, mode reduce-overhead on CUDA (CUDA graphs), the
  default mode on a CPU (inductor's generated C++);
- `cudagraph`: the deployed module captured once as a CUDA graph and replayed.

Preparing a model (compiling, capturing) takes seconds to a minute and happens once per
architecture; `prepare` returns that time so a trial can record it as its own stage.

Every model is compiled through a function with a code object of its own: dynamo keeps its
compiled code per code object, and with one shared entry point (every student's `forward` is the
teacher class's) the ninth architecture would exceed its recompile limit and silently run eager.
An early-exit model decides per sample whether to go on, so its segments are compiled or
captured one by one and the decision stays in Python, as a deployment of it would do.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
import types
from collections.abc import Callable

import torch
from torch import nn

from slimsearch.errors import ConfigError

TORCH_RUNTIMES = ("torch", "torch-compile", "cudagraph")
_entries = itertools.count()


class HalfLayer(nn.Module):
    """A layer whose 16-bit weights are also computed in float16 (on a GPU, the quant family's 16-bit
    choice is a kernel choice, not only storage)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.half()).to(x.dtype)


def deployed_torch_model(model: nn.Module, device: str, *, half_layers: bool | None = None) -> nn.Module:
    """The module a torch runtime executes for `model` (which is left as it is): fake-quant folded
    into plain weights, 16-bit layers computed in float16 (`half_layers`, default: on CUDA, where
    half kernels are fast; a CPU keeps them stored-only), the model's execution precision applied
    (techniques/precision.py), in eval mode on `device`."""
    from slimsearch.techniques.precision import execution_dtype, in_execution_dtype
    from slimsearch.techniques.quantization import fold, quantized_layers

    half_layers = device == "cuda" if half_layers is None else half_layers
    layers = quantized_layers(model)
    sixteen = [name for name, layer in layers.items() if layer.bits == 16]
    deployed = fold(model) if layers else copy.deepcopy(model).cpu()
    if half_layers and sixteen and execution_dtype(model) is None:
        modules = dict(deployed.named_modules())
        for name in sixteen:
            parent_name, _, attribute = name.rpartition(".")
            parent = modules[parent_name] if parent_name else deployed
            setattr(parent, attribute, HalfLayer(modules[name]))
    return in_execution_dtype(deployed).eval().to(device)


def _fresh_entry(module: nn.Module) -> Callable:
    """`module`'s call through a function whose code object belongs to it alone (see the module doc)."""

    def entry(x):
        return module(x)

    code = entry.__code__.replace(co_name=f"slimsearch_deployed_{next(_entries)}")
    return types.FunctionType(code, entry.__globals__, code.co_name, entry.__defaults__, entry.__closure__)


def _compile(module: nn.Module, device: str) -> Callable:
    mode = "reduce-overhead" if device == "cuda" else None
    return torch.compile(_fresh_entry(module), mode=mode, dynamic=False)


def _strict_dynamo():
    """While compiling: past its recompile limit dynamo would fall back to eager without a word,
    and a latency taken so would lie; where this torch can say so, make it fail instead."""
    import contextlib

    import torch._dynamo

    if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
        return torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)
    return contextlib.nullcontext()


def _capture(module: nn.Module, example: torch.Tensor) -> Callable[..., object]:
    """`module` captured as a CUDA graph on `example`'s shape; the returned function copies its
    input into the graph's own input tensor, replays, and returns the graph's outputs. The copy
    is what a server does with each request (and what torch.compile's CUDA graphs do too)."""
    static_input = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
            for _ in range(3):
                module(static_input)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = module(static_input)

    def replay(x: torch.Tensor):
        static_input.copy_(x)
        graph.replay()
        return static_output

    replay.graph = graph  # keeps the graph (and its memory pool) alive as long as the function
    return replay


class _Unit(nn.Module):
    """A compiled or captured callable standing in for an early-exit model's segment.

    `copy_outputs`: torch.compile's CUDA graphs (reduce-overhead) may reuse an output's memory
    once another compiled function runs, and the next segment runs right after this one with its
    output as input; a copy keeps it valid. Our own captures have a memory pool each and need none.
    """

    def __init__(self, run: Callable, copy_outputs: bool = False) -> None:
        super().__init__()
        self.run = run
        self.copy_outputs = copy_outputs

    def forward(self, x: torch.Tensor):
        out = self.run(x)
        if not self.copy_outputs:
            return out
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()


def early_exit_part(module: nn.Module):
    """The early-exit model inside a deployed form (which may wrap it in a precision cast), or None."""
    from slimsearch.techniques.exits import EarlyExitModel

    for part in module.modules():
        if isinstance(part, EarlyExitModel):
            return part
    return None


def prepare_module(module: nn.Module, example: torch.Tensor, runtime: str, device: str) -> Callable:
    """A callable running deployed `module` (on `device`) on the runtime; `example` is an input of
    the shape it will see. Compiles or captures now (the first calls do, for torch.compile)."""
    if runtime == "torch":
        return module
    if runtime == "cudagraph" and device != "cuda":
        raise ConfigError(f"runtime='cudagraph' runs on CUDA GPUs only, but got device={device!r}")
    exits = early_exit_part(module)
    if exits is None:
        run = _compile(module, device) if runtime == "torch-compile" else _capture(module, example)
        with torch.inference_mode(), _strict_dynamo():
            for _ in range(3):  # torch.compile compiles on the first call and records CUDA graphs on the third
                run(example)
        return run
    with torch.inference_mode(), _strict_dynamo():
        x = example if exits is module else _exit_input(module, exits, example)
        for index, segment in enumerate(exits.segments):
            unit = _compile(segment, device) if runtime == "torch-compile" else _capture(segment, x)
            for _ in range(3):
                output = unit(x)
            exits.segments[index] = _Unit(unit, copy_outputs=runtime == "torch-compile" and device == "cuda")
            if index < len(exits.segments) - 1:
                x = output[0].clone()
    return module


def _exit_input(module: nn.Module, exits: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """What the early-exit part of `module` receives for `example` (after a precision cast, say)."""
    seen = []
    hook = exits.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        module(example)
    finally:
        hook.remove()
    return seen[0]


def prepare(model: nn.Module, example_input: torch.Tensor, runtime: str, device: str) -> tuple[Callable[[], None], float]:
    """(a zero-argument function running one inference of `model`'s deployed form on
    `example_input`, the seconds spent compiling or capturing it). On a CPU, call it with
    torch's thread count set as it will be measured: inductor's C++ takes it at compile time."""
    started = time.perf_counter()
    deployed = deployed_torch_model(model, device)
    x = example_input.to(device)
    run = prepare_module(deployed, x, runtime, device)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started

    def once() -> None:
        with torch.inference_mode():
            run(x)

    return once, seconds


def architecture_key(model: nn.Module, settings) -> str:
    """A hash of the deployed torch module without its weight values (modules, shapes, dtypes,
    generated graph code) and of how it is measured: one measurement per architecture, as the
    ONNX latency cache keys the deployed graph."""
    deployed = deployed_torch_model(model, "cpu")
    digest = hashlib.sha256(str(deployed).encode())
    for name, tensor in deployed.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    for name, part in deployed.named_modules():
        if isinstance(part, torch.fx.GraphModule):  # the wiring of a traced segment is in its code
            digest.update(f"{name}:{part.code}".encode())
    import dataclasses

    digest.update(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    return digest.hexdigest()[:24]


def check_compiler() -> None:
    """torch.compile on a CPU generates C++: refuse the target up front when no compiler is found."""
    import os
    import shutil

    if not any(shutil.which(name) for name in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++"))):
        raise ConfigError("target.runtime='torch-compile' on device='cpu' needs a C++ compiler for inductor, and "
                          "none was found (CXX, g++, c++, clang++); allowed here: runtime='torch' or 'onnxruntime'")
