"""Search settings: small frozen dataclasses validated where they enter, and the TOML loader.

A search is configured from defaults, then a TOML file, then CLI flags or API keywords; every
layer goes through `SearchConfig.from_mapping`, so a bad value is rejected the same way and
with the same message wherever it came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from slimsearch.errors import ConfigError

# Latency runtimes. torch: eager; torch-compile: torch.compile with inductor (CUDA graphs on a GPU);
# cudagraph: the deployed module captured once as a CUDA graph and replayed; onnxruntime: ONNX
# Runtime's CPU or CUDA provider by device; onnxruntime-tensorrt: its TensorRT provider.
RUNTIMES = ("onnxruntime", "onnxruntime-tensorrt", "torch", "torch-compile", "cudagraph")
CUDA_ONLY_RUNTIMES = ("onnxruntime-tensorrt", "cudagraph")
TORCH_RUNTIMES = ("torch", "torch-compile", "cudagraph")
DEVICES = ("cpu", "cuda")
# Where fine-tuning, teacher logits, sensitivity probes and evaluation run; auto: cuda if present.
TRAINING_DEVICES = ("auto", "cpu", "cuda")
# Execution precisions a model may be searched at; half precision runs on CUDA torch runtimes only.
PRECISIONS = ("float32", "float16", "bfloat16")
HALF_PRECISIONS = ("float16", "bfloat16")
SAMPLERS = ("nsga2", "tpe", "random")
# Who proposes candidates after the warm start (search/proposals/): Optuna's sampler, the
# predictor-guided inner search, and the budgeted allocation by layer sensitivity.
PROPOSERS = ("sampler", "predictor", "allocation", "long_finetune")
# What the sampler samples: the genome (per-family intensity, per-layer allocation by
# sensitivity; spaces/genome.py) or every per-layer knob on its own.
PARAMETRISATIONS = ("genome", "layer")
# Where trials run: Optuna in this process (and --jobs processes beside it), or Ray Tune on a cluster.
BACKENDS = ("optuna", "ray")
GRANULARITIES = ("layer", "stage", "global")
# Knob families the Candidate format knows; the ones with an implementation are registered in
# `slimsearch.spaces`, the others are rejected there with a clear line until they land.
KNOWN_FAMILIES = ("prune", "distill", "quant", "separable", "lowrank", "exits", "precision")
# Bit widths a quantized layer may take: 32 is float, 16 half precision, 8 and below integer.
QUANT_BITS = (32, 16, 8, 4, 2)
# How a layer of 8 bits or fewer stores its weights: per-channel affine grid or k-means codebook.
QUANT_MODES = ("uniform", "kmeans")
# How an early exit reads confidence: top softmax probability, or 1 - normalised entropy.
EXIT_CRITERIA = ("max_prob", "entropy")

_BUDGET_PATTERN = re.compile(r"^\s*(?P<value>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(?P<unit>ms|us|µs|s|x)\s*$", re.I)
_UNIT_TO_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}
_DURATION_PATTERN = re.compile(r"^\s*(?P<value>[0-9]*\.?[0-9]+)\s*(?P<unit>s|m|min|h)?\s*$", re.I)
_UNIT_TO_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Budget:
    """A latency budget: absolute (`1.5ms`, `800us`) or relative to the teacher (`0.5x`).

    A relative budget is judged against the teacher measured in the same window as the
    candidate, so drift on a noisy machine moves both and does not look like a speed-up.
    """

    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str | float | Budget) -> Budget:
        if isinstance(text, Budget):
            return text
        match = _BUDGET_PATTERN.match(str(text))
        value = float(match["value"]) if match else 0.0
        if not match or not 0 < value < math.inf:  # '1e400ms' parses to inf
            raise ConfigError(
                f"invalid latency budget {str(text)!r}: expected a positive time such as '1.5ms' or '800us', "
                f"or a ratio to the teacher's latency such as '0.5x'"
            )
        unit = match["unit"].lower()
        if unit == "x":
            return cls(value=value, relative=True)
        return cls(value=value * _UNIT_TO_MS[unit], relative=False)

    def limit_ms(self, teacher_ms: float) -> float:
        return self.value * teacher_ms if self.relative else self.value

    def violation(self, latency_ms: float, teacher_ms: float) -> float:
        """How far over budget, as a fraction of the budget: <= 0 means feasible."""
        return latency_ms / self.limit_ms(teacher_ms) - 1.0

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}ms"


def _check_choice(section: str, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        allowed_text = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{section}{key} must be one of {allowed_text}, but got {key}={value!r}")


def _check_positive(section: str, key: str, value: Any, *, integer: bool = True, allow_zero: bool = False) -> None:
    kind = int if integer else (int, float)
    ok = (isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        what = "an integer" if integer else "a finite number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{section}{key} must be {what} {bound}, but got {key}={value!r}")


def _check_list(key: str, value: Any) -> None:
    # A string is iterable too: families = "prune" would otherwise read as ['p', 'r', ...].
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"space.{key} must be a list, but got {key}={value!r}")


@dataclass(frozen=True)
class TargetConfig:
    """Where the compressed model will run; latency is measured under exactly these conditions."""

    runtime: str = "onnxruntime"
    device: str = "cpu"
    batch_size: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        _check_choice("target.", "runtime", self.runtime, RUNTIMES)
        _check_choice("target.", "device", self.device, DEVICES)
        _check_positive("target.", "batch_size", self.batch_size)
        _check_positive("target.", "threads", self.threads)
        if self.device == "cpu" and self.runtime in CUDA_ONLY_RUNTIMES:
            allowed = ", ".join(repr(r) for r in RUNTIMES if r not in CUDA_ONLY_RUNTIMES)
            raise ConfigError(f"target.runtime={self.runtime!r} runs on CUDA GPUs only, but got device='cpu'; "
                              f"allowed on device='cpu': runtime {allowed} (or device='cuda')")

    @property
    def runs_half(self) -> bool:
        """Whether this target can execute a model in float16 / bfloat16 (see space.precisions)."""
        return self.device == "cuda" and self.runtime in TORCH_RUNTIMES


@dataclass(frozen=True)
class LatencyConfig:
    """How latency is measured: warm-up calls, timed calls, rounds alternating with the teacher.

    `margin`: a candidate measured more than this fraction over budget before fine-tuning is
    stopped there (latency-first rule); one within the margin is fine-tuned and re-measured.
    """

    warmup: int = 10
    repeats: int = 100
    rounds: int = 5
    margin: float = 0.1
    # Early-exit models are timed on this many real validation samples, one at a time.
    exit_samples: int = 200

    def __post_init__(self) -> None:
        _check_positive("latency.", "exit_samples", self.exit_samples)
        _check_positive("latency.", "warmup", self.warmup, allow_zero=True)
        _check_positive("latency.", "repeats", self.repeats)
        _check_positive("latency.", "rounds", self.rounds)
        _check_positive("latency.", "margin", self.margin, integer=False, allow_zero=True)
        if self.rounds > self.repeats:
            raise ConfigError(f"latency.rounds must be <= latency.repeats, but got rounds={self.rounds}, repeats={self.repeats}")


@dataclass(frozen=True)
class FinetuneConfig:
    """The distillation fine-tune every candidate gets (the same budget for all of them).

    `screen_epochs` is multi-fidelity (search/fidelity.py): every candidate is first fine-tuned
    this far into its `epochs`-long schedule, and only one that could still reach the front
    trains on to the end. 0, or a value not below `epochs`, gives every candidate the full fine-tune.

    `long_factor` is how many times this fine-tune a long one is: the `long_finetune` proposer
    (search/proposals/long_finetune.py) gives measured candidates that could add to the front if
    they recovered more accuracy that much more training. 1 turns it off. 5 by default: the warm
    start's bold point (uniform pruning at 0.8 in float) came within a point of the teacher after
    a fine-tune 5x as long in every bench run on digits and mnist1d (98.89% against 99.44% on
    digits, 98.17-98.50% against 99.17% on mnist1d), and in two of six 3x as long.
    """

    epochs: float = 3.0
    lr: float = 2e-3
    batch_size: int = 64
    screen_epochs: float = 1.0
    long_factor: float = 5.0
    # Optimiser steps per fine-tune; when set it replaces `epochs` (with real data, an epoch over
    # the whole train split can take hours). The screen then comes at the same share of the
    # steps as `screen_epochs` is of `epochs` (a third by default).
    steps: int | None = None
    # Where fine-tuning, teacher logits, sensitivity probes and evaluation run (auto: cuda if present).
    device: str = "auto"
    # bf16 autocast for fine-tuning on a CUDA device; models with quantized layers always train in
    # float32 (their int grids and fp16 rounding would be lost in bf16).
    autocast: bool = True

    def __post_init__(self) -> None:
        _check_choice("finetune.", "device", self.device, TRAINING_DEVICES)
        if not isinstance(self.autocast, bool):
            raise ConfigError(f"finetune.autocast must be true or false, but got autocast={self.autocast!r}")
        _check_positive("finetune.", "epochs", self.epochs, integer=False)
        _check_positive("finetune.", "lr", self.lr, integer=False)
        _check_positive("finetune.", "batch_size", self.batch_size)
        _check_positive("finetune.", "screen_epochs", self.screen_epochs, integer=False, allow_zero=True)
        factor = self.long_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (math.isfinite(factor) and factor >= 1):
            raise ConfigError(f"finetune.long_factor must be a number >= 1 (1: no long fine-tunes), "
                              f"but got long_factor={factor!r}")
        if self.steps is not None:
            _check_positive("finetune.", "steps", self.steps)

    @property
    def screens(self) -> bool:
        """Whether candidates get a short fine-tune first (see `screen_epochs`)."""
        return 0 < self.screen_epochs < self.epochs

    def plan(self, train_samples: int, *, scale: float = 1.0) -> FinetunePlan:
        """The fine-tune's length in optimiser steps for a train split of `train_samples`; `scale`
        times as long for a long fine-tune, which is never screened (its candidate was measured)."""
        per_epoch = max(1, math.ceil(train_samples / self.batch_size))
        total = self.steps if self.steps is not None else max(1, round(self.epochs * per_epoch))
        total = max(1, round(total * scale))
        screen = None
        if self.screens and scale == 1.0:
            share = self.screen_epochs / self.epochs
            screen = round(share * total) if self.steps is not None else round(self.screen_epochs * per_epoch)
            screen = screen if 0 < screen < total else None
        return FinetunePlan(steps=total, steps_per_epoch=per_epoch, screen_step=screen)


@dataclass(frozen=True)
class FinetunePlan:
    """A fine-tune in optimiser steps; `epochs` and `screen_epochs` say the same in passes over the train split."""

    steps: int
    steps_per_epoch: int
    screen_step: int | None

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch

    @property
    def screen_epochs(self) -> float | None:
        return None if self.screen_step is None else self.screen_step / self.steps_per_epoch


@dataclass(frozen=True)
class SpaceConfig:
    """Which knob families are searched and their ranges."""

    families: tuple[str, ...] = ("prune", "quant", "distill", "separable", "lowrank", "exits", "precision")
    granularity: str = "layer"
    max_prune_ratio: float = 0.9
    prune_step: float = 0.05
    round_to: int = 8
    temperature: tuple[float, float] = (1.0, 8.0)
    alpha: tuple[float, float] = (0.0, 1.0)
    bits: tuple[int, ...] = QUANT_BITS
    quant_modes: tuple[str, ...] = QUANT_MODES
    # Module names kept in float whatever the sampler says (e.g. ["stem.0", "head"]); checked
    # against the model in Space.discover, where the names are known.
    pin_float: tuple[str, ...] = ()
    # Low-rank factorisation: shares of a layer's full rank to choose from (1.0, whole, is added).
    rank_ratios: tuple[float, ...] = (0.5, 0.25, 0.125)
    # Early exits: the confidence a sample needs to leave at an exit, and how confidence is read.
    exit_thresholds: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    exit_criteria: tuple[str, ...] = EXIT_CRITERIA
    # Execution precisions searched on targets that run half precision (CUDA, torch runtimes);
    # None: all of PRECISIONS there, float32 elsewhere. A half precision on another target is refused.
    precisions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_list("families", self.families)
        object.__setattr__(self, "families", tuple(self.families))
        self._check_quant()
        self._check_precisions()
        self._check_architecture()
        for family in self.families:
            _check_choice("space.", "families", family, KNOWN_FAMILIES)
        if not self.families or len(set(self.families)) != len(self.families):
            raise ConfigError(f"space.families must name distinct families from {', '.join(KNOWN_FAMILIES)}, "
                              f"but got families={list(self.families)}")
        _check_choice("space.", "granularity", self.granularity, GRANULARITIES)
        if not (isinstance(self.max_prune_ratio, (int, float)) and 0 < self.max_prune_ratio < 1):
            raise ConfigError(f"space.max_prune_ratio must be in (0, 1), but got max_prune_ratio={self.max_prune_ratio!r}")
        if not (isinstance(self.prune_step, (int, float)) and 0 < self.prune_step <= self.max_prune_ratio):
            raise ConfigError(f"space.prune_step must be in (0, max_prune_ratio], but got prune_step={self.prune_step!r}")
        _check_positive("space.", "round_to", self.round_to)
        for key, lowest, highest, allowed in (("temperature", 1e-6, math.inf, "0 < low <= high"),
                                              ("alpha", 0.0, 1.0, "0 <= low <= high <= 1")):
            value = getattr(self, key)
            pair = tuple(value) if isinstance(value, (list, tuple)) else ()
            numbers = len(pair) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
            if not (numbers and lowest <= pair[0] <= pair[1] <= highest and math.isfinite(pair[1])):
                shown = list(value) if isinstance(value, (list, tuple)) else value
                raise ConfigError(f"space.{key} must be [low, high] with {allowed}, but got {key}={shown!r}")
            object.__setattr__(self, key, pair)

    def _check_quant(self) -> None:
        for key in ("bits", "quant_modes", "pin_float"):
            value = getattr(self, key)
            _check_list(key, value)
            object.__setattr__(self, key, tuple(value))
        allowed_bits = ", ".join(map(str, QUANT_BITS))
        for bits in self.bits:
            if isinstance(bits, bool) or bits not in QUANT_BITS:
                raise ConfigError(f"space.bits may only hold {allowed_bits}, but got bits={bits!r}")
        if not self.bits or len(set(self.bits)) != len(self.bits):
            raise ConfigError(f"space.bits must list distinct bit widths from {allowed_bits}, but got bits={list(self.bits)}")
        for mode in self.quant_modes:
            _check_choice("space.", "quant_modes", mode, QUANT_MODES)
        if not self.quant_modes:
            raise ConfigError(f"space.quant_modes must name at least one of {', '.join(QUANT_MODES)}, but got quant_modes=[]")
        for name in self.pin_float:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"space.pin_float must list module names such as 'stem.0' or 'head', but got {name!r}")

    def _check_precisions(self) -> None:
        if self.precisions is None:
            return
        _check_list("precisions", self.precisions)
        object.__setattr__(self, "precisions", tuple(self.precisions))
        for precision in self.precisions:
            _check_choice("space.", "precisions", precision, PRECISIONS)
        if not self.precisions or len(set(self.precisions)) != len(self.precisions):
            raise ConfigError(f"space.precisions must list distinct precisions from {', '.join(PRECISIONS)}, "
                              f"but got precisions={list(self.precisions)}")

    def searched_precisions(self, target: TargetConfig) -> tuple[str, ...]:
        """The precisions a search on `target` chooses from."""
        if self.precisions is not None:
            return self.precisions
        return PRECISIONS if target.runs_half else ("float32",)

    def _check_architecture(self) -> None:
        for key in ("rank_ratios", "exit_thresholds", "exit_criteria"):
            value = getattr(self, key)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not value:
                raise ConfigError(f"space.{key} must be a non-empty list, but got {key}={value!r}")
            object.__setattr__(self, key, tuple(value))
        for ratio in self.rank_ratios:
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
                raise ConfigError(f"space.rank_ratios must hold shares of the full rank in (0, 1), but got {ratio!r}")
        for threshold in self.exit_thresholds:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
                raise ConfigError(f"space.exit_thresholds must hold confidences in [0, 1], but got {threshold!r}")
        for criterion in self.exit_criteria:
            _check_choice("space.", "exit_criteria", criterion, EXIT_CRITERIA)


def parse_duration(key: str, value: Any, *, section: str = "faults.") -> float:
    """Seconds from a number (seconds) or a string such as '90s', '10m', '1.5h'."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_PATTERN.match(value)):
        seconds = float(match["value"]) * _UNIT_TO_S[(match["unit"] or "s").lower()]
    if seconds is None or not (0 < seconds < float("inf")):
        raise ConfigError(f"{section}{key} must be a positive duration such as 600, '90s', '10m' or '2h', "
                          f"but got {key}={value!r}")
    return seconds


@dataclass(frozen=True)
class FaultsConfig:
    """How a search survives bad trials and lost workers (search/faults.py, search/recovery.py).

    `trial_timeout`: seconds one trial may take before it is stopped and recorded as failed
    (None: no limit). `heartbeat_interval` / `grace_period`: every running trial writes a
    heartbeat to the study storage this often; a trial whose heartbeat is older than the grace
    period belongs to a dead worker, and is failed and queued again by any live one.
    """

    trial_timeout: float | None = None
    heartbeat_interval: int = 30
    grace_period: int = 120

    def __post_init__(self) -> None:
        if self.trial_timeout is not None:
            object.__setattr__(self, "trial_timeout", parse_duration("trial_timeout", self.trial_timeout))
        _check_positive("faults.", "heartbeat_interval", self.heartbeat_interval)
        _check_positive("faults.", "grace_period", self.grace_period)
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"faults.grace_period must be longer than faults.heartbeat_interval (or live trials would be taken "
                f"for dead ones), but got grace_period={self.grace_period}, heartbeat_interval={self.heartbeat_interval}"
            )


@dataclass(frozen=True)
class RayConfig:
    """How trials run on a Ray cluster (used when `backend = "ray"`, see search/ray_backend.py).

    `address`: the cluster to join ('HOST:PORT', 'auto' or 'ray://HOST:PORT'); None joins the
    cluster in $RAY_ADDRESS, or else starts a one-machine Ray here. `gpus_per_trial` None means
    1 for a CUDA target (its latency is measured on the GPU) and 0 otherwise.
    `target_resource`: the custom Ray resource that marks nodes of the target's kind; None
    means `slimsearch_target_<device>`. `max_concurrent_trials` None: as many as the nodes fit.
    """

    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    max_concurrent_trials: int | None = None
    target_resource: str | None = None

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()
                                         or any(c.isspace() for c in self.address)):
            raise ConfigError(f"ray.address must be a Ray cluster address such as '10.0.0.5:6379', 'auto' or "
                              f"'ray://10.0.0.5:10001', but got address={self.address!r}")
        _check_positive("ray.", "cpus_per_trial", self.cpus_per_trial, integer=False)
        if self.gpus_per_trial is not None:
            _check_positive("ray.", "gpus_per_trial", self.gpus_per_trial, integer=False, allow_zero=True)
        if self.max_concurrent_trials is not None:
            _check_positive("ray.", "max_concurrent_trials", self.max_concurrent_trials)
        if self.target_resource is not None and not (
                isinstance(self.target_resource, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", self.target_resource)
                and self.target_resource not in ("CPU", "GPU", "memory", "object_store_memory")):
            raise ConfigError(f"ray.target_resource must name a custom Ray resource such as 'slimsearch_target_cpu' "
                              f"(letters, digits, '_', '.', '-'; not CPU, GPU or memory), but got "
                              f"target_resource={self.target_resource!r}")


@dataclass(frozen=True)
class SearchConfig:
    """One search: the task, the budget, the search engine settings and the sections above."""

    task: str = "digits"
    latency_budget: Budget = field(default_factory=lambda: Budget.parse("0.5x"))
    trials: int = 30
    name: str | None = None
    sampler: str = "tpe"
    proposers: tuple[str, ...] = PROPOSERS
    parametrisation: str = "genome"
    seed: int = 0
    storage: str | None = None
    runs_dir: str = "runs"
    jobs: int = 1
    # Propose a few obvious candidates (pruning with int8, an early exit, int8) before the others.
    warm_start: bool = True
    # Wall time after which no new trial starts (None: no limit); the search then ends with
    # fewer than `trials` and running it again continues.
    time_budget: float | None = None
    backend: str = "optuna"
    # Bring your own model and data (tasks torchvision:<model> and timm:<model>): `data` a folder
    # in ImageFolder layout, `weights` the teacher's checkpoint, `image_size` the side images are
    # resized to (None: the model's usual input size).
    data: str | None = None
    weights: str | None = None
    image_size: int | None = None
    # The search-time validation subset: trials are scored on this many validation samples
    # (seeded by `seed`, the same for the whole study); front models are re-evaluated on the
    # full validation and test splits. None: every trial is scored on the full validation split.
    val_samples: int | None = None
    # DataLoader worker processes for data read from disk (None: automatic, 0: read in the trial's
    # own process). In-memory splits (TensorDataset) are always sliced directly.
    loader_workers: int | None = None
    target: TargetConfig = field(default_factory=TargetConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency_budget", Budget.parse(self.latency_budget))
        if not isinstance(self.task, str) or not self.task.strip():
            raise ConfigError(f"task must be a non-empty name, but got task={self.task!r}")
        _check_positive("", "trials", self.trials)
        _check_positive("", "jobs", self.jobs)
        _check_choice("", "sampler", self.sampler, SAMPLERS)
        if isinstance(self.proposers, (str, bytes, Mapping)) or not hasattr(self.proposers, "__iter__"):
            raise ConfigError(f"proposers must be a list drawn from {', '.join(PROPOSERS)}, but got proposers={self.proposers!r}")
        object.__setattr__(self, "proposers", tuple(self.proposers))
        for proposer in self.proposers:
            _check_choice("", "proposers", proposer, PROPOSERS)
        if not self.proposers or len(set(self.proposers)) != len(self.proposers):
            raise ConfigError(f"proposers must name distinct proposers from {', '.join(PROPOSERS)}, "
                              f"but got proposers={list(self.proposers)}")
        _check_choice("", "parametrisation", self.parametrisation, PARAMETRISATIONS)
        if not isinstance(self.warm_start, bool):
            raise ConfigError(f"warm_start must be true or false, but got warm_start={self.warm_start!r}")
        if self.time_budget is not None:
            object.__setattr__(self, "time_budget", parse_duration("time_budget", self.time_budget, section=""))
        _check_choice("", "backend", self.backend, BACKENDS)
        half = [p for p in self.space.precisions or () if p in HALF_PRECISIONS]
        if half and not self.target.runs_half:
            raise ConfigError(
                f"space.precisions holds {half[0]!r}, which runs on device='cuda' with runtime "
                f"{', '.join(repr(r) for r in TORCH_RUNTIMES)} only, but the target is runtime={self.target.runtime!r} "
                f"on device={self.target.device!r}; allowed here: precisions=['float32']")
        if self.backend == "ray" and self.jobs != 1:
            raise ConfigError(f"jobs runs parallel trials on this machine with backend='optuna'; with backend='ray' "
                              f"the cluster runs as many trials as its nodes fit (or ray.max_concurrent_trials), "
                              f"but got jobs={self.jobs!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, but got seed={self.seed!r}")
        if self.name is not None and not (isinstance(self.name, str)
                                          and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name)):
            raise ConfigError(
                f"name must be letters, digits, '.', '_' or '-' (it names a folder under runs/), but got name={self.name!r}"
            )
        if self.storage is not None and not (isinstance(self.storage, str) and "://" in self.storage):
            raise ConfigError(
                f"storage must be an Optuna storage URL such as 'sqlite:///path/study.db' or "
                f"'postgresql://user@host/db', but got storage={self.storage!r}"
            )
        if isinstance(self.runs_dir, os.PathLike):
            object.__setattr__(self, "runs_dir", os.fspath(self.runs_dir))
        if not isinstance(self.runs_dir, str) or not self.runs_dir.strip():
            raise ConfigError(f"runs_dir must be a folder path such as 'runs', but got runs_dir={self.runs_dir!r}")
        self._check_data()

    def _check_data(self) -> None:
        for key, example in (("data", "'images/' (train/<class>/*, val/<class>/*)"), ("weights", "'teacher.pt'")):
            value = getattr(self, key)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, key, value := os.fspath(value))
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{key} must be a path such as {example}, but got {key}={value!r}")
        if self.image_size is not None:
            _check_positive("", "image_size", self.image_size)
        if self.val_samples is not None:
            _check_positive("", "val_samples", self.val_samples)
        if self.loader_workers is not None:
            _check_positive("", "loader_workers", self.loader_workers, allow_zero=True)
        if (self.data is not None or self.weights is not None or self.image_size is not None) \
                and not self.task.startswith(("torchvision:", "timm:")):
            given = ", ".join(f"{key}={getattr(self, key)!r}" for key in ("data", "weights", "image_size")
                              if getattr(self, key) is not None)
            raise ConfigError(f"data, weights and image_size are for the tasks 'torchvision:<model>' and "
                              f"'timm:<model>', but got {given} with task={self.task!r} (a task factory reads "
                              f"its own data)")

    @property
    def run_name(self) -> str:
        return self.name or re.sub(r"[^A-Za-z0-9._-]+", "-", self.task).strip("-")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["latency_budget"] = str(self.latency_budget)
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "settings", base: SearchConfig | None = None) -> SearchConfig:
        """Overlay `data` (nested like the TOML file) on `base`; unknown keys are refused."""
        base = base or cls()
        top: dict[str, Any] = {}
        sections = {"target": TargetConfig, "latency": LatencyConfig, "finetune": FinetuneConfig, "space": SpaceConfig,
                    "faults": FaultsConfig, "ray": RayConfig}
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: [{key}] must be a table of settings, but got {key}={value!r}")
                top[key] = _overlay(getattr(base, key), value, f"{source}: unknown key '{key}.{{key}}'")
            else:
                top[key] = value
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in top:
            if key not in allowed:
                raise ConfigError(f"{source}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        return dataclasses.replace(base, **top)


def _overlay(section: Any, values: Mapping[str, Any], unknown: str) -> Any:
    allowed = [f.name for f in dataclasses.fields(section)]
    for key in values:
        if key not in allowed:
            raise ConfigError(unknown.format(key=key) + f"; allowed keys: {', '.join(allowed)}")
    return dataclasses.replace(section, **values)


def load_toml(path: str | Path, *, base: SearchConfig | None = None) -> SearchConfig:
    """Read a search config file: top-level keys plus [target], [latency], [finetune], [space], [faults], [ray]."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"a config file must be a path to a .toml file, but got {path!r}")
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a folder; expected a .toml file such as search.toml") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {getattr(error, 'strerror', None) or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    return SearchConfig.from_mapping(data, source=str(path), base=base)


def default_cache_dir() -> Path:
    """Where trained teachers and teacher logits are cached: $SLIMSEARCH_CACHE or ~/.cache/slimsearch."""
    import os

    configured = os.environ.get("SLIMSEARCH_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "slimsearch"
