"""One trial, as data flows: candidate -> student -> latency first -> fine-tune -> evaluate.

Scoring lives in `evaluators/`, transforming in `techniques/`, sampling in `spaces/`; this
module only runs them in order, times each stage and records what happened on the trial.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from slimsearch.config import SearchConfig, default_cache_dir
from slimsearch.evaluators import latency as latency_eval
from slimsearch.evaluators import runtimes
from slimsearch.evaluators.accuracy import accuracy
from slimsearch.evaluators.compute import compute_device, use_device
from slimsearch.evaluators.deploy import export_onnx, exporters_in
from slimsearch.evaluators.deployed_accuracy import deployed_accuracy
from slimsearch.evaluators.exit_deploy import export_early_exit, is_early_exit, segment_files
from slimsearch.evaluators.latency_cache import LatencyCache, architecture_key
from slimsearch.evaluators.latency_worker import IsolatedMeasurer
from slimsearch.evaluators.macs import record_compute
from slimsearch.evaluators.quantized_deploy import export_deployed
from slimsearch.evaluators.size import file_size_bytes, packed_size_bytes, parameter_count
from slimsearch.evaluators.train import TeacherLogits, distillation_targets, fit
from slimsearch.search.fidelity import Screen, screened_out_reason
from slimsearch.search.origins import finetune_scale, is_warm_start, proposed_attrs
from slimsearch.search.storage import CONSTRAINT_NAME, FIRST_LATENCY_ATTR, artifact_store
from slimsearch.spaces import Candidate, Space
from slimsearch.spaces.optuna_adapter import suggest_candidate
from slimsearch.tasks.base import Task
from slimsearch.techniques import build_student
from slimsearch.techniques.exits import exit_outcomes
from slimsearch.techniques.quantization import calibrate, quantized_layers

WEIGHTS_ATTR = "weights_artifact"
LATENCY_ONLY_CALIBRATION = 32  # samples setting the activation ranges of a model that is only timed


def latency_settings(config: SearchConfig) -> latency_eval.LatencySettings:
    target, measure = config.target, config.latency
    return latency_eval.LatencySettings(
        runtime=target.runtime, device=target.device, batch_size=target.batch_size, threads=target.threads,
        warmup=measure.warmup, repeats=measure.repeats, rounds=measure.rounds,
    )


@dataclass
class TrialContext:
    """What every trial of a search shares; built once per process.

    On ONNX Runtime, latency is timed by an `IsolatedMeasurer` (a process that never trains, see
    evaluators/latency_worker.py). The torch runtimes (eager, torch-compile, cudagraph) can only
    be timed where the model lives, so they are timed in this process, beside the training it did.
    Training and evaluation run on `device` (finetune.device; the GPU when there is one).
    """

    config: SearchConfig
    task: Task
    space: Space
    run_dir: Path
    teacher_logits: TeacherLogits | None
    measurer: IsolatedMeasurer | None = None
    teacher_runner: Callable[[], None] | None = None
    cache_hits: int = 0  # measurements answered by the latency cache, for the trial's record
    device: str = "cpu"
    teacher_per_sample: Callable | None = None  # the teacher as a torch runtime runs it one sample at a time

    @functools.cached_property
    def latency_cache(self) -> LatencyCache:
        return LatencyCache(self.run_dir)

    @classmethod
    def create(cls, config: SearchConfig, task: Task, space: Space, run_dir: Path) -> TrialContext:
        settings = latency_settings(config)
        # Here, not at the CLI: it is the machine that times trials that must have the target device.
        latency_eval.check_target_available(settings)
        use_device(config.finetune.device)  # teacher logits, sensitivity and evaluation follow it
        plan = config.finetune.plan(len(task.train))
        logits = distillation_targets(task.teacher, task.train, cache_dir=default_cache_dir() / "logits",
                                      samples_seen=plan.steps * config.finetune.batch_size * config.trials,
                                      workers=task.loader_workers)
        context = cls(config, task, space, run_dir, logits, device=compute_device())
        if settings.runtime in latency_eval.ORT_RUNTIMES:
            # Each process exports its own copy, so parallel workers never write one file at once.
            workdir = Path(tempfile.mkdtemp(prefix="slimsearch-teacher-"))
            teacher_onnx = export_onnx(task.teacher, task.example_input, workdir / "teacher.onnx")
            # Real samples are read only for early exits, the one family timed on them.
            context.measurer = IsolatedMeasurer(teacher_onnx, task.example_input, settings,
                                                samples=context.latency_samples if "exits" in config.space.families else None)
        else:
            context.teacher_runner = latency_eval.make_runner(task.teacher, task.example_input, settings)
        return context

    @property
    def latency_samples(self) -> torch.Tensor:
        """Real validation inputs: early-exit models are timed on these, one at a time."""
        return self.task.latency_samples(self.config.latency.exit_samples)

    def measure(self, student: torch.nn.Module, workdir: Path, *, lower_bound: bool = False,
                stage: _Stages | None = None) -> tuple[latency_eval.PairedMeasurement, dict[str, float] | None]:
        """Student and teacher timed in one window, under the machine-wide measurement lock;
        with the share of samples leaving at each exit for an early-exit student (else None).

        The student is timed in its deployment form: QDQ int8 / fp16-weight ONNX when it has
        quantized layers (activation ranges calibrated on training inputs), plain ONNX otherwise;
        an early-exit student as its segments and runner, on real samples one at a time.
        `lower_bound` sends every sample out at the first exit: the fastest the student can be,
        whatever its (not yet trained) heads will say. Compiling, capturing or building the
        runtime's session is charged to `stage`'s "compile" stage, not to latency.
        """
        calibration = _calibration(self.task, student)
        if lower_bound and calibration is not None:
            # A lower bound is only timed: the int8 graph it deploys to, and so its latency, does
            # not depend on the activation ranges, which a few samples set as well as 512 (ONNX
            # Runtime's calibration of 512 took a tenth of a second per probe on digits).
            calibration = calibration[:LATENCY_ONLY_CALIBRATION]
        if is_early_exit(student):
            measured, shares, prepare_seconds = self._measure_exits(student, workdir, lower_bound, calibration)
        else:
            (measured, prepare_seconds), shares = self._measure_fixed(student, workdir, calibration), None
        if stage is not None:
            stage.move("compile", prepare_seconds)
        return measured, shares

    def _measure_exits(self, student, workdir: Path, lower_bound: bool, calibration: torch.Tensor | None):
        thresholds = [0.0] * len(student.thresholds) if lower_bound else None
        settings = latency_settings(self.config)
        # With every threshold at 0 each sample takes the same path (the first segment and its
        # head), so the lower bound needs no more samples than give as many timed calls as a
        # fixed-shape measurement (samples x rounds = repeats); 200 samples cost ten times that
        # (0.6 s a probe on digits, a sixth of its priors pass).
        samples = max(1, settings.repeats // settings.rounds) if lower_bound else None
        if self.measurer is not None:
            folder = workdir / "exits"
            export_early_exit(student, self.task.example_input, folder, calibration_inputs=calibration)
            return (*self.measurer.measure_exits(folder, thresholds, samples), self.measurer.last_prepare_seconds)
        # The torch runtimes: the deployed form with its segments compiled or captured one by one
        # (evaluators/runtimes.py), against the teacher prepared the same way, sample by sample.
        rows = [row.unsqueeze(0).to(settings.device) for row in self.latency_samples[:samples]]
        started = time.perf_counter()
        with latency_eval.gpu_work(settings.device):  # not inside another process's measurement
            deployed = runtimes.deployed_torch_model(student, settings.device)
            exits = runtimes.early_exit_part(deployed)
            if thresholds is not None:
                exits.thresholds = thresholds
            shares = _exit_shares(exits, torch.cat(rows))  # before its segments become batch-1 graphs
            student_run = runtimes.prepare_module(deployed, rows[0], settings.runtime, settings.device)
            teacher_run = self._per_sample_teacher(rows[0])
        prepare_seconds = time.perf_counter() - started

        def run(model, i: int) -> None:
            with torch.inference_mode():
                model(rows[i])

        paired = latency_eval.measure_pair_per_sample(lambda i: run(student_run, i), lambda i: run(teacher_run, i),
                                                      len(rows), settings)
        return paired, shares, prepare_seconds

    def _per_sample_teacher(self, row: torch.Tensor):
        """The teacher as the torch runtime runs it one sample at a time (prepared once)."""
        if self.teacher_per_sample is None:
            settings = latency_settings(self.config)
            deployed = runtimes.deployed_torch_model(self.task.teacher, settings.device)
            self.teacher_per_sample = runtimes.prepare_module(deployed, row, settings.runtime, settings.device)
        return self.teacher_per_sample

    def _measure_fixed(self, student: torch.nn.Module, workdir: Path,
                       calibration: torch.Tensor | None) -> tuple[latency_eval.PairedMeasurement, float]:
        settings = latency_settings(self.config)
        if self.measurer is not None:
            onnx_path = export_deployed(student, self.task.example_input, workdir / "student.onnx",
                                        calibration_inputs=calibration)
            key = architecture_key(onnx_path, settings)
            cached = self.latency_cache.get(key)
            if cached is not None:
                self.cache_hits += 1
                return cached, 0.0
            measured = self.measurer.measure_pair(onnx_path)
            self.latency_cache.put(key, measured)
            return measured, self.measurer.last_prepare_seconds
        # The torch runtimes time the deployed form (fake-quant folded into plain weights, the
        # model's precision applied, compiled or captured): see evaluators/runtimes.py. Compiling
        # costs far more than timing, so those runtimes reuse a measured architecture's latency.
        key = runtimes.architecture_key(student, settings) if settings.runtime != "torch" else None
        cached = self.latency_cache.get(key) if key else None
        if cached is not None:
            self.cache_hits += 1
            return cached, 0.0
        runner = latency_eval.make_runner(student, self.task.example_input, settings)
        measured = latency_eval.measure_pair(runner, self.teacher_runner, settings)
        if key:
            self.latency_cache.put(key, measured)
        return measured, runner.prepare_seconds

    def close(self) -> None:
        if self.measurer is not None:
            self.measurer.close()

    def measure_teacher(self) -> latency_eval.Measurement:
        if self.measurer is not None:
            return self.measurer.measure_teacher()
        return latency_eval.measure(self.teacher_runner, latency_settings(self.config))


class _Stages:
    """Wall time per stage of a trial (build, latency, finetune, evaluate).

    Stages may nest (the multi-fidelity screen evaluates part-way through the fine-tune): the
    outer stage pauses while the inner one runs, so no second is counted twice.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: list[list] = []  # [name, when its current stretch began], innermost last

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self._open:
            self._charge_innermost()
        self._open.append([name, time.perf_counter()])
        try:
            yield
        finally:
            self._charge_innermost()
            self._open.pop()
            if self._open:
                self._open[-1][1] = time.perf_counter()

    def move(self, name: str, seconds: float) -> None:
        """Charge `seconds` of the stage running now to stage `name` (a part of it measured inside)."""
        if seconds <= 0:
            return
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if self._open:
            self._open[-1][1] += seconds

    def _charge_innermost(self) -> None:
        now = time.perf_counter()
        name, began = self._open[-1]
        self.seconds[name] = self.seconds.get(name, 0.0) + now - began
        self._open[-1][1] = now


def run_trial(trial, context: TrialContext) -> tuple[float, float, float]:
    """The Optuna objective: (validation accuracy, latency in ms, packed size in bytes)."""
    try:
        return _run_trial(trial, context)
    except Exception as error:
        # Optuna records the failure; the reason must survive with it for the report.
        trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:500])
        raise


def _run_trial(trial, context: TrialContext) -> tuple[float, float, float]:
    config, task = context.config, context.task
    stage = _Stages()
    candidate = suggest_candidate(trial, context.space)
    trial.set_user_attr("candidate", candidate.to_dict())
    hits_before = context.cache_hits

    with stage("build"):
        student = build_student(candidate, task.teacher, task.example_input, config.space)
        calibrate(student, _calibration(task, student))  # activation ranges of quantized layers; else a no-op
        size_bytes = packed_size_bytes(student)
    trial.set_user_attr("params_count", parameter_count(student))
    record_compute(trial, student, task.teacher, task.example_input)  # MACs and parameters against the teacher

    with tempfile.TemporaryDirectory(prefix="slimsearch-trial-") as tmp:
        workdir = Path(tmp)
        with stage("latency"):
            # An early-exit student's latency depends on what its heads will say once trained;
            # before that, the only honest figure is its lower bound (everyone leaves first).
            first, first_shares = context.measure(student, workdir, lower_bound=True, stage=stage)
        # The predictors learn from every measurement (search/predictors.py); an early-exit
        # student's first one is its lower bound, every sample leaving at the first exit.
        trial.set_user_attr(FIRST_LATENCY_ATTR, first.student.value_ms / first.teacher.value_ms)
        violation = config.latency_budget.violation(first.student.value_ms, first.teacher.value_ms)
        if violation > config.latency.margin:
            # Latency-first: no fine-tuning for a candidate that cannot be feasible. Its
            # accuracy as built (no fine-tune) is cheap and keeps the trial comparable.
            with stage("evaluate"):
                untuned = accuracy(student, task.search_val, workers=task.loader_workers)
            bound = " even with every sample leaving at the first exit" if first_shares is not None else ""
            _record(trial, first, violation, stage, context.cache_hits - hits_before, stopped=(
                f"latency-first: {first.student.value_ms:.3f} ms{bound} is {violation:.0%} over the "
                f"{config.latency_budget} budget; not fine-tuned"))
            trial.set_user_attr("accuracy_before_finetune", untuned)
            return _finite(untuned, "accuracy"), first.student.value_ms, float(size_bytes)

        with stage("finetune"):
            distill = candidate.family("distill")
            # In steps: finetune.steps, or epochs of this train split; a long fine-tune's factor times that.
            plan = config.finetune.plan(len(task.train), scale=finetune_scale(proposed_attrs(trial)))
            trial.set_user_attr("finetune_epochs", round(plan.epochs, 4))
            screen = _screen(trial, context, student, first, size_bytes, stage) if plan.screen_step else None
            fit(student, task.train, steps=plan.steps, lr=config.finetune.lr,
                batch_size=config.finetune.batch_size, teacher_logits=context.teacher_logits,
                temperature=distill.get("temperature", 4.0), alpha=distill.get("alpha", 0.0),
                seed=finetune_seed(config.seed, candidate), workers=task.loader_workers, device=context.device,
                autocast=config.finetune.autocast, checkpoint=plan.screen_epochs if screen else None,
                on_checkpoint=screen)
            screened_out = screen is not None and screen.screened_out
            if not screened_out:
                calibrate(student, _calibration(task, student))  # final ranges on the fine-tuned weights
        if screened_out:
            # Off the low rung's front: its short-fine-tune accuracy is its (honest) objective,
            # and `stopped_early` keeps it off the front, as latency-first does.
            _record(trial, first, violation, stage, context.cache_hits - hits_before,
                    stopped=screened_out_reason(screen.outcome, plan.epochs))
            return screen.outcome["accuracy"], first.student.value_ms, float(size_bytes)
        with stage("evaluate"):
            val_accuracy = _finite(accuracy(student, task.search_val, workers=task.loader_workers), "validation accuracy")
            splits = {"val": task.search_val}
            if not task.val_is_subset:  # else front models get it when re-evaluated (search/reevaluate.py)
                trial.set_user_attr("test_accuracy", accuracy(student, task.test, workers=task.loader_workers))
                splits["test"] = task.test
            deployed = deployed_accuracy(student, task, latency_settings(config), workdir, splits)
            if deployed is not None:  # quantized or exits: the shipped form's figures lead, torch's kept beside
                trial.set_user_attr("torch_accuracy", {"val": val_accuracy, "test": trial.user_attrs.get("test_accuracy")})
                val_accuracy = _finite(deployed["val"], "deployed validation accuracy")
                if "test" in deployed:
                    trial.set_user_attr("test_accuracy", deployed["test"])
        with stage("latency"):
            # The final model is exported again (BatchNorm statistics and weights updated); when
            # it deploys to the graph already timed, the latency cache answers without timing.
            final, exit_shares = context.measure(student, workdir, stage=stage)
        violation = config.latency_budget.violation(final.student.value_ms, final.teacher.value_ms)
        trial.set_user_attr("onnx_bytes", _deployed_bytes(workdir))
        trial.set_user_attr("onnx_exporter", exporters_in(workdir))  # "torchscript", or "dynamo" where it fell back
        if exit_shares is not None:
            trial.set_user_attr("exit_shares", exit_shares)
        _save_weights(trial, student, workdir, context.run_dir)
        _record(trial, final, violation, stage, context.cache_hits - hits_before, stopped=None)
        return val_accuracy, final.student.value_ms, float(size_bytes)


def finetune_seed(seed: int, candidate: Candidate) -> int:
    """The fine-tune's seed: from the search seed and the candidate, not the trial number, so a
    candidate trains the same whenever and in whichever study it comes up (a retried trial, or
    the hand baseline's points the warm start repeats)."""
    return (seed + int(candidate.key, 16)) % 2**31


def _screen(trial, context: TrialContext, student: torch.nn.Module, first, size_bytes: int, stage: _Stages):
    """The fine-tune's checkpoint callback that decides whether this trial earns its full fine-tune."""
    task = context.task

    def evaluate() -> float:
        with stage("evaluate"):
            # On a copy: calibrating the student itself would change the activation ranges its
            # remaining epochs train against, and a promoted candidate would not end where an
            # unscreened one does.
            probe = copy.deepcopy(student)
            calibrate(probe, _calibration(task, probe))  # ranges of the weights as they are now
            return _finite(accuracy(probe, task.search_val, workers=task.loader_workers), "validation accuracy")

    return Screen(trial, epochs=context.config.finetune.plan(len(task.train)).screen_epochs,
                  latency_ratio=first.student.value_ms / first.teacher.value_ms, size_bytes=size_bytes,
                  evaluate=evaluate, always_promote=is_warm_start(proposed_attrs(trial)))


def _exit_shares(exits: torch.nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """The share of `inputs` leaving at each exit of a deployed early-exit model ("final" last)."""
    dtype = next(exits.parameters()).dtype  # the exits compute in the model's precision
    with torch.inference_mode():
        _, taken = exit_outcomes(exits.exit_logits(inputs.to(dtype)), exits.thresholds, exits.criterion)
    names = [*exits.exit_points, "final"]
    return {name: float((taken == index).float().mean()) for index, name in enumerate(names)}


def _calibration(task: Task, student: torch.nn.Module) -> torch.Tensor | None:
    """Train inputs for a quantized student's activation ranges; None (nothing read) for a float one."""
    return task.calibration_inputs() if quantized_layers(student) else None


def _deployed_bytes(workdir: Path) -> int | None:
    """Bytes of the deployed ONNX form: one file, or an early-exit model's segments."""
    if (workdir / "student.onnx").exists():
        return file_size_bytes(workdir / "student.onnx")
    if (workdir / "exits").is_dir():
        return sum(file_size_bytes(path) for path in segment_files(workdir / "exits"))
    return None


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is {value}: the model produced non-finite outputs")
    return value


def _record(trial, measured, violation: float, stage: _Stages, cache_hits: int, *, stopped: str | None) -> None:
    # Measurements this trial reused from the latency cache (a fine-tuned form usually deploys
    # to the graph its untrained form was timed as).
    trial.set_user_attr("latency_cache_hits", cache_hits)
    trial.set_user_attr("latency", measured.student.to_dict())
    trial.set_user_attr("teacher_latency_ms", measured.teacher.value_ms)
    trial.set_user_attr("speedup", measured.speedup)
    trial.set_user_attr("feasible", violation <= 0)
    trial.set_user_attr("violation", violation)
    trial.set_constraint(CONSTRAINT_NAME, violation)
    trial.set_user_attr("stopped_early", stopped)
    trial.set_user_attr("seconds", {name: round(s, 4) for name, s in stage.seconds.items()})


def _save_weights(trial, student: torch.nn.Module, workdir: Path, run_dir: Path) -> None:
    """Keep the fine-tuned weights as an Optuna artifact so export never retrains."""
    from optuna.artifacts import upload_artifact

    path = workdir / f"trial-{trial.number}-weights.pt"
    torch.save(student.state_dict(), path)
    artifact_id = upload_artifact(artifact_store=artifact_store(run_dir), file_path=str(path), study_or_trial=trial)
    trial.set_user_attr(WEIGHTS_ATTR, artifact_id)


def load_student(candidate: Candidate, task: Task, config: SearchConfig, weights_path: Path) -> torch.nn.Module:
    """Rebuild a trial's fine-tuned student from the teacher, its candidate and its stored weights."""
    student = build_student(candidate, task.teacher, task.example_input, config.space)
    student.load_state_dict(torch.load(weights_path, weights_only=True, map_location="cpu"))
    return student.eval()
