"""The bad-input catalogue: every way a user can hand slimsearch a bad value, and the one line it answers.

`CASES` is the single source of docs/bad-input.md (a test checks the page lists exactly these
rows; `python -m tests.test_bad_input` prints the table to paste) and of the tests below: each
CLI row runs the real command line (`slimsearch.cli.main` in a subprocess; cheap rows share one
process, see tests/cli/batch.py) and must exit 2 with exactly one `error: ...` line, no
traceback, holding the row's message; each API row must raise the row's exception type with the
message. A message's '…' stands for text that varies (a path, the machine's providers).
Bad input never costs completed work: the rows aimed at an existing run leave its study's rows
and run.json byte for byte as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import slimsearch
from slimsearch.errors import ConfigError, ExportError, TaskError
from tests.conftest import REPO, slimsearch_cli, slimsearch_cli_batch, write_toml

DOC = REPO / "docs" / "bad-input.md"
GOOD = "tests.tasks.factories:good"  # a user task that builds in well under a second
FAST = ("--task", GOOD, "--latency-budget", "2x", "--trials", "1")  # flags for rows that get past the settings
# Rows aimed at the finished run: a refused task must leave its study as it was.
IN_GOOD_RUN = ("--runs-dir", "{runs}", "--name", "good", "--latency-budget", "2x")
FOLDER_TASK = ("--task", "torchvision:resnet18", "--image-size", "32")
FAST_TOML = {"task": GOOD, "latency_budget": "2x", "trials": 1, "runs_dir": "{tmp}/runs",
             "latency": {"warmup": 1, "repeats": 10, "rounds": 2}}


@dataclass(frozen=True)
class Case:
    """One row: where the bad value enters, what it is, and the stable part of the answer."""

    entry: str
    bad: str
    message: str
    cli: tuple[str, ...] = ()  # a command line (placeholders: {tmp}, {file}, {run}, ...)
    toml: dict | str | None = None  # a config file passed as `run`'s first argument
    call: Callable[[dict], Any] | None = None  # an API call, given the placeholders and the run
    error: type[Exception] | None = None  # what the API call raises
    names: tuple[str, ...] = ()  # more text the line must hold, e.g. a path the message writes as '…'
    needs_run: bool = False  # aimed at the tiny finished run the module makes
    skip: Callable[[], str | None] | None = None  # a reason this machine cannot show the row
    id: str = ""

    @property
    def outcome(self) -> str:
        return "exit 2" if self.error is None else self.error.__name__

    def markdown(self) -> str:
        cells = [self.entry, self.bad, f"`{self.message}`", self.outcome]
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _cuda_onnxruntime() -> str | None:
    import onnxruntime as ort

    return "ONNX Runtime has CUDA here" if "CUDAExecutionProvider" in ort.get_available_providers() else None


def _cuda_torch() -> str | None:
    import torch

    return "torch has CUDA here" if torch.cuda.is_available() else None


def _tensorrt_onnxruntime() -> str | None:
    import onnxruntime as ort

    return "ONNX Runtime has TensorRT here" if "TensorrtExecutionProvider" in ort.get_available_providers() else None


def _timm_installed() -> str | None:
    import importlib.util

    return "timm is installed here" if importlib.util.find_spec("timm") else None


def _search(**settings):
    return lambda ctx: slimsearch.search(**settings)


def _export(**kwargs):
    # Strings are filled at call time: out="{file}/model" names this run's paths.
    return lambda ctx: slimsearch.export(ctx["run"], **{key: value.format(**ctx) if isinstance(value, str) else value
                                                         for key, value in kwargs.items()})


CASES = [
    # --- slimsearch run: flags -------------------------------------------------------------------
    Case("`slimsearch run --task`", "unknown task name",
         "unknown task 'cifar99': expected one of 'digits', 'mnist1d', 'torchvision:<model>'",
         cli=("run", "--task", "cifar99"), id="task-unknown"),
    Case("`slimsearch run --task`", "a near miss of a built-in name", "unknown task 'digit'…did you mean 'digits'?",
         cli=("run", "--task", "digit"), id="task-typo"),
    Case("`slimsearch run --task`", "empty task name", "task must be a non-empty name, but got task=''",
         cli=("run", "--task", ""), id="task-empty"),
    Case("`slimsearch run --task`", "unknown torchvision model",
         "unknown torchvision model 'resnet19' in task 'torchvision:resnet19'; did you mean resnet18",
         cli=("run", "--task", "torchvision:resnet19", "--runs-dir", "{tmp}"), id="task-torchvision-unknown"),
    Case("`slimsearch run --latency-budget`", "no unit",
         "invalid latency budget '1.5': expected a positive time such as '1.5ms' or '800us', or a ratio to the "
         "teacher's latency such as '0.5x'", cli=("run", "--latency-budget", "1.5"), id="budget-no-unit"),
    Case("`slimsearch run --latency-budget`", "not a time", "invalid latency budget 'fast'",
         cli=("run", "--latency-budget", "fast"), id="budget-word"),
    Case("`slimsearch run --latency-budget`", "negative", "invalid latency budget '-1ms'",
         cli=("run", "--latency-budget", "-1ms"), id="budget-negative"),
    Case("`slimsearch run --latency-budget`", "zero", "invalid latency budget '0x'",
         cli=("run", "--latency-budget", "0x"), id="budget-zero"),
    Case("`slimsearch run --latency-budget`", "infinite (overflows to inf)", "invalid latency budget '1e400ms'",
         cli=("run", "--latency-budget", "1e400ms"), id="budget-infinite"),
    Case("`slimsearch run --trials`", "zero", "trials must be an integer > 0, but got trials=0",
         cli=("run", "--trials", "0"), id="trials-zero"),
    Case("`slimsearch run --trials`", "not a number", "Invalid value for '--trials': …; got --trials 'ten'",
         cli=("run", "--trials", "ten"), id="trials-word"),
    Case("`slimsearch run --jobs`", "zero", "jobs must be an integer > 0, but got jobs=0",
         cli=("run", "--jobs", "0"), id="jobs-zero"),
    Case("`slimsearch run --sampler`", "unknown sampler",
         "sampler must be one of 'nsga2', 'tpe', 'random', but got sampler='grid'",
         cli=("run", "--sampler", "grid"), id="sampler"),
    Case("`slimsearch run --granularity`", "unknown granularity",
         "space.granularity must be one of 'layer', 'stage', 'global', but got granularity='block'",
         cli=("run", "--granularity", "block"), id="granularity"),
    Case("`slimsearch run --name`", "a path instead of a name",
         "name must be letters, digits, '.', '_' or '-' (it names a folder under runs/), but got name='../escape'",
         cli=("run", "--name", "../escape"), id="name-path"),
    Case("`slimsearch run --name`", "HTML or rich markup (never reaches a page or the terminal)",
         "name must be letters, digits, '.', '_' or '-' (it names a folder under runs/), but got name='<b>[bold]x'",
         cli=("run", "--name", "<b>[bold]x"), id="name-markup"),
    Case("`slimsearch run --storage`", "not a URL",
         "storage must be an Optuna storage URL such as 'sqlite:///path/study.db' or 'postgresql://user@host/db', "
         "but got storage='study.db'", cli=("run", "--storage", "study.db"), id="storage-not-url"),
    Case("`slimsearch run --storage`", "unknown database kind", "cannot open storage 'nosuchdb://host/db': …",
         cli=("run", *FAST, "--runs-dir", "{tmp}", "--storage", "nosuchdb://host/db"), id="storage-unknown-dialect"),
    Case("`slimsearch run --storage`", "SQLite file in a missing folder",
         "cannot open storage 'sqlite:////nonexistent/folder/study.db': …unable to open database file",
         cli=("run", *FAST, "--runs-dir", "{tmp}", "--storage", "sqlite:////nonexistent/folder/study.db"),
         id="storage-sqlite-missing-folder"),
    Case("`slimsearch run --runs-dir`", "unwritable run folder (under a file)",
         "cannot write to run folder '…': part of that path is a file, not a folder",
         cli=("run", "--runs-dir", "{file}"), names=("{file}/digits",), id="runs-dir-unwritable"),
    Case("`slimsearch run --runtime`", "unknown runtime",
         "target.runtime must be one of 'onnxruntime', 'onnxruntime-tensorrt', 'torch', 'torch-compile', 'cudagraph', "
         "but got runtime='tensorrt'", cli=("run", "--runtime", "tensorrt"), id="runtime"),
    Case("`slimsearch run --runtime`", "a CUDA-only runtime on a CPU target",
         "target.runtime='cudagraph' runs on CUDA GPUs only, but got device='cpu'; allowed on device='cpu': runtime "
         "'onnxruntime', 'torch', 'torch-compile' (or device='cuda')", cli=("run", "--runtime", "cudagraph"),
         id="runtime-cudagraph-cpu"),
    Case("`slimsearch run --runtime`", "CUDA graphs on a machine without a CUDA GPU",
         "target.device='cuda' with runtime='cudagraph', but torch sees no CUDA GPU on this machine "
         "(torch.cuda.is_available() is False); allowed here: device='cpu'",
         cli=("run", *FAST, "--runs-dir", "{tmp}", "--runtime", "cudagraph", "--device", "cuda"), skip=_cuda_torch,
         id="runtime-cudagraph-no-gpu"),
    Case("`slimsearch run --runtime`", "ONNX Runtime's TensorRT provider where onnxruntime-gpu is not installed",
         "target.device='cuda' with runtime='onnxruntime-tensorrt', but ONNX Runtime offers only …; allowed here: "
         "runtime='onnxruntime' with device='cpu' or 'cuda' (or install onnxruntime-gpu",
         cli=("run", *FAST, "--runs-dir", "{tmp}", "--runtime", "onnxruntime-tensorrt", "--device", "cuda"),
         skip=_tensorrt_onnxruntime, id="runtime-tensorrt-missing"),
    Case("`slimsearch run --device`", "unknown device", "target.device must be one of 'cpu', 'cuda', but got device='tpu'",
         cli=("run", "--device", "tpu"), id="device-unknown"),
    Case("`slimsearch run --device`", "cuda on a machine whose runtime has no CUDA",
         "target.device='cuda' with runtime='onnxruntime', but ONNX Runtime offers only …; allowed here: device='cpu'",
         cli=("run", *FAST, "--runs-dir", "{tmp}", "--device", "cuda"), skip=_cuda_onnxruntime, id="device-cuda-missing"),
    Case("`slimsearch run --threads`", "zero", "target.threads must be an integer > 0, but got threads=0",
         cli=("run", "--threads", "0"), id="threads-zero"),
    Case("`slimsearch run --batch-size`", "negative", "target.batch_size must be an integer > 0, but got batch_size=-4",
         cli=("run", "--batch-size", "-4"), id="batch-size-negative"),
    Case("`slimsearch run --epochs`", "zero", "finetune.epochs must be a finite number > 0, but got epochs=0.0",
         cli=("run", "--epochs", "0"), id="epochs-zero"),
    Case("`slimsearch run --epochs`", "infinite", "finetune.epochs must be a finite number > 0, but got epochs=inf",
         cli=("run", "--epochs", "inf"), id="epochs-infinite"),
    Case("`slimsearch run --time-budget`", "not a duration",
         "time_budget must be a positive duration such as 600, '90s', '10m' or '2h', but got time_budget='soon'",
         cli=("run", "--time-budget", "soon"), id="time-budget-word"),
    Case("TOML `time_budget`", "zero",
         "time_budget must be a positive duration such as 600, '90s', '10m' or '2h', but got time_budget=0",
         toml={"task": "digits", "time_budget": 0}, id="time-budget-zero"),
    Case("TOML `[finetune] screen_epochs`", "negative",
         "finetune.screen_epochs must be a finite number >= 0, but got screen_epochs=-1",
         toml={"task": "digits", "finetune": {"screen_epochs": -1}}, id="screen-epochs-negative"),
    Case("TOML `[finetune] long_factor`", "below 1",
         "finetune.long_factor must be a number >= 1 (1: no long fine-tunes), but got long_factor=0.5",
         toml={"task": "digits", "finetune": {"long_factor": 0.5}}, id="long-factor-below-one"),
    Case("TOML `[space] precisions`", "half precision on a CPU target",
         "space.precisions holds 'float16', which runs on device='cuda' with runtime 'torch', 'torch-compile', "
         "'cudagraph' only, but the target is runtime='onnxruntime' on device='cpu'; allowed here: precisions=['float32']",
         toml={"task": "digits", "space": {"precisions": ["float32", "float16"]}}, id="precisions-half-on-cpu"),
    Case("TOML `[space] precisions`", "unknown precision",
         "space.precisions must be one of 'float32', 'float16', 'bfloat16', but got precisions='fp8'",
         toml={"task": "digits", "space": {"precisions": ["fp8"]}}, id="precisions-unknown"),
    Case("TOML `[finetune] device`", "unknown device",
         "finetune.device must be one of 'auto', 'cpu', 'cuda', but got device='gpu'",
         toml={"task": "digits", "finetune": {"device": "gpu"}}, id="finetune-device-unknown"),
    Case("TOML `[finetune] device`", "cuda on a machine without a CUDA GPU",
         "finetune.device='cuda', but torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
         "allowed here: device='cpu' or 'auto'", toml={**FAST_TOML, "finetune": {"device": "cuda"}}, skip=_cuda_torch,
         id="finetune-device-cuda-missing"),
    Case("TOML `proposers`", "an unknown proposer",
         "proposers must be one of 'sampler', 'predictor', 'allocation', 'long_finetune', but got proposers='oracle'",
         toml={"task": "digits", "proposers": ["predictor", "oracle"]}, id="proposers-unknown"),
    Case("TOML `proposers`", "a string instead of a list",
         "proposers must be a list drawn from sampler, predictor, allocation, long_finetune, but got proposers='predictor'",
         toml={"task": "digits", "proposers": "predictor"}, id="proposers-string"),
    Case("TOML `proposers`", "empty",
         "proposers must name distinct proposers from sampler, predictor, allocation, long_finetune, but got proposers=[]",
         toml={"task": "digits", "proposers": []}, id="proposers-empty"),
    Case("TOML `parametrisation`", "unknown",
         "parametrisation must be one of 'genome', 'layer', but got parametrisation='stage'",
         toml={"task": "digits", "parametrisation": "stage"}, id="parametrisation-unknown"),
    Case("`slimsearch run`", "an unknown flag", "No such option: --budget", cli=("run", "--budget", "1ms"),
         id="flag-unknown"),
    Case("`slimsearch run CONFIG`", "config file that does not exist", "config file '…' does not exist",
         cli=("run", "{tmp}/nope.toml"), names=("nope.toml",), id="config-missing"),
    Case("`slimsearch run CONFIG`", "a folder instead of a file",
         "config file '…' is a folder; expected a .toml file such as search.toml", cli=("run", "{tmp}"),
         id="config-folder"),
    Case("`slimsearch run CONFIG`", "not TOML", "config file '…' is not valid TOML: …", toml="task = digits\n",
         id="config-not-toml"),
    # --- search.toml keys (the same checks serve CLI flags and Python keywords) -----------------------
    Case("TOML top level", "misspelt key", "unknown key 'trails'; allowed keys: task, latency_budget, trials",
         toml={"task": "digits", "trails": 3}, id="toml-unknown-key"),
    Case("TOML `[target]`", "misspelt key", "unknown key 'target.runtim'; allowed keys: runtime, device",
         toml={"target": {"runtim": "torch"}}, id="toml-unknown-section-key"),
    Case("TOML `target`", "a value instead of a table", "[target] must be a table of settings, but got target='cpu'",
         toml={"target": "cpu"}, id="toml-section-not-table"),
    Case("TOML `trials`", "a string", "trials must be an integer > 0, but got trials='ten'", toml={"trials": "ten"},
         id="toml-trials-string"),
    Case("TOML `runs_dir`", "not a path", "runs_dir must be a folder path such as 'runs', but got runs_dir=5",
         toml={"runs_dir": 5}, id="toml-runs-dir-type"),
    Case("TOML `storage`", "not a string", "storage must be an Optuna storage URL such as", toml={"storage": 5},
         names=("storage=5",), id="toml-storage-type"),
    Case("TOML `[space] max_prune_ratio`", "outside (0, 1)",
         "space.max_prune_ratio must be in (0, 1), but got max_prune_ratio=1.0",
         toml={"space": {"max_prune_ratio": 1.0}}, id="max-prune-ratio-one"),
    Case("TOML `[space] max_prune_ratio`", "negative", "space.max_prune_ratio must be in (0, 1), but got max_prune_ratio=-0.2",
         toml={"space": {"max_prune_ratio": -0.2}}, id="max-prune-ratio-negative"),
    Case("TOML `[space] prune_step`", "zero", "space.prune_step must be in (0, max_prune_ratio], but got prune_step=0",
         toml={"space": {"prune_step": 0}}, id="prune-step-zero"),
    Case("TOML `[space] prune_step`", "above max_prune_ratio",
         "space.prune_step must be in (0, max_prune_ratio], but got prune_step=0.95",
         toml={"space": {"prune_step": 0.95}}, id="prune-step-too-big"),
    Case("TOML `[space] round_to`", "zero", "space.round_to must be an integer > 0, but got round_to=0",
         toml={"space": {"round_to": 0}}, id="round-to-zero"),
    Case("TOML `[space] alpha`", "range above 1",
         "space.alpha must be [low, high] with 0 <= low <= high <= 1, but got alpha=[0.5, 1.5]",
         toml={"space": {"alpha": [0.5, 1.5]}}, id="alpha-above-one"),
    Case("TOML `[space] alpha`", "a number instead of a range",
         "space.alpha must be [low, high] with 0 <= low <= high <= 1, but got alpha=0.5",
         toml={"space": {"alpha": 0.5}}, id="alpha-not-range"),
    Case("TOML `[space] temperature`", "zero low end",
         "space.temperature must be [low, high] with 0 < low <= high, but got temperature=[0, 8]",
         toml={"space": {"temperature": [0, 8]}}, id="temperature-zero"),
    Case("TOML `[space] bits`", "a width that does not exist", "space.bits may only hold 32, 16, 8, 4, 2, but got bits=3",
         toml={"space": {"bits": [8, 3]}}, id="bits-unknown"),
    Case("TOML `[space] bits`", "empty", "space.bits must list distinct bit widths from 32, 16, 8, 4, 2, but got bits=[]",
         toml={"space": {"bits": []}}, id="bits-empty"),
    Case("TOML `[space] bits`", "a number instead of a list", "space.bits must be a list, but got bits=8",
         toml={"space": {"bits": 8}}, id="bits-not-list"),
    Case("TOML `[space] quant_modes`", "unknown mode",
         "space.quant_modes must be one of 'uniform', 'kmeans', but got quant_modes='lloyd'",
         toml={"space": {"quant_modes": ["lloyd"]}}, id="quant-mode"),
    Case("TOML `[space] families`", "unknown family",
         "space.families must be one of 'prune', 'distill', 'quant', 'separable', 'lowrank', 'exits', 'precision', but got "
         "families='magic'", toml={"space": {"families": ["prune", "magic"]}}, id="family-unknown"),
    Case("TOML `[space] families`", "a string instead of a list", "space.families must be a list, but got families='prune'",
         toml={"space": {"families": "prune"}}, id="families-string"),
    Case("TOML `[space] rank_ratios`", "a share of the rank outside (0, 1)",
         "space.rank_ratios must hold shares of the full rank in (0, 1), but got 1.5",
         toml={"space": {"rank_ratios": [0.5, 1.5]}}, id="rank-ratio-range"),
    Case("TOML `[space] exit_thresholds`", "a confidence outside [0, 1]",
         "space.exit_thresholds must hold confidences in [0, 1], but got 2",
         toml={"space": {"exit_thresholds": [0.9, 2]}}, id="exit-threshold-range"),
    Case("TOML `[space] exit_criteria`", "an unknown confidence criterion",
         "space.exit_criteria must be one of 'max_prob', 'entropy', but got exit_criteria='margin'",
         toml={"space": {"exit_criteria": ["margin"]}}, id="exit-criterion-unknown"),
    Case("TOML `[space] pin_float`", "a module the model does not have",
         "space.pin_float names 'classifier', which is not a module of this model; allowed: module names such as",
         toml={**FAST_TOML, "space": {"pin_float": ["classifier"]}}, id="pin-float-unknown"),
    Case("TOML `[latency]`", "more rounds than repeats",
         "latency.rounds must be <= latency.repeats, but got rounds=20, repeats=10",
         toml={"latency": {"rounds": 20, "repeats": 10}}, id="latency-rounds"),
    Case("TOML `[latency] margin`", "negative", "latency.margin must be a finite number >= 0, but got margin=-0.1",
         toml={"latency": {"margin": -0.1}}, id="latency-margin"),
    Case("TOML `[finetune] lr`", "zero", "finetune.lr must be a finite number > 0, but got lr=0",
         toml={"finetune": {"lr": 0}}, id="finetune-lr"),
    Case("TOML `latency_budget`", "a budget no candidate can meet",
         "latency budget 0.01x cannot be met: the fastest of the … candidates timed in this space (…) measures …; "
         "allowed: a budget above …", toml={**FAST_TOML, "latency_budget": "0.01x"}, id="budget-infeasible"),
    # --- user task factories (`--task package.module:function`) -------------------------------------------
    Case("task factory name", "not `package.module:function`",
         "task factory 'my tasks:make' is not of the form 'package.module:function'",
         cli=("run", "--task", "my tasks:make"), id="factory-form"),
    Case("task factory", "module that does not import",
         "task factory 'no_such_package.tasks:make': cannot import module 'no_such_package.tasks' (ModuleNotFoundError",
         cli=("run", "--runs-dir", "{tmp}", "--task", "no_such_package.tasks:make"), id="factory-no-module"),
    Case("task factory", "missing function",
         "task factory 'tests.tasks.factories:nope': module 'tests.tasks.factories' has no attribute 'nope'",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:nope"), id="factory-no-function"),
    Case("task factory", "not callable", "task factory 'tests.tasks.factories:not_callable' is not callable (it is a int)",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:not_callable"), id="factory-not-callable"),
    Case("task factory", "raises", "task factory 'tests.tasks.factories:raises' raised RuntimeError: the user's data is "
         "missing", cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:raises"), id="factory-raises"),
    Case("task factory", "returns the wrong type",
         "task factory 'tests.tasks.factories:bad_return' returned int, but it must return a slimsearch.tasks.Task",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:bad_return"), id="factory-wrong-type"),
    Case("task factory", "data with the wrong channel count for the model",
         "task factory 'tests.tasks.factories:wrong_channels': task 'tiny-conv': the teacher cannot run on "
         "example_input of shape (1, 3, 8, 8) (RuntimeError: …); example_input must be one batch the teacher takes",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:wrong_channels"), id="task-channels"),
    Case("task factory", "model outputs do not match num_classes",
         "task 'tiny-conv': the teacher must return logits of shape (1, 12) for example_input (num_classes=12), "
         "but returned shape (1, 10)",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:wrong_num_classes"), id="task-classes"),
    Case("task factory", "labels outside [0, num_classes)",
         "task 'tiny-conv': test labels must lie in [0, 9] (num_classes=10), but range from 10 to 19",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:labels_out_of_range"), id="task-labels"),
    Case("task factory", "float labels",
         "task 'tiny-conv': val labels must be a 1-D tensor of integer class indices, but got (359,) float32",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:float_labels"), id="task-label-dtype"),
    Case("task factory", "example input with a batch of 2",
         "task 'tiny-conv': example_input must be a batch of 1, but got shape (2, 1, 8, 8)",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:example_batch_of_two"), id="task-example"),
    Case("task factory", "teacher that is not a module",
         "task 'tiny-conv': teacher must be a torch.nn.Module, but got str",
         cli=("run", "--runs-dir", "{tmp}", "--task", "tests.tasks.factories:teacher_not_a_module"), id="task-teacher"),
    Case("task factory", "mixed-size images (an ImageFolder read with ToTensor alone)",
         "task factory 'tests.tasks.factories:mixed_size_images': task 'mixed-sizes': train sample 5 (…/train/b/2.png) "
         "is (3, 40, 40) float32, but example_input's samples are (3, 32, 32) float32; every sample must have that "
         "shape and dtype", cli=("run", *IN_GOOD_RUN, "--task", "tests.tasks.factories:mixed_size_images"),
         needs_run=True, id="task-mixed-sizes"),
    # --- your model and images (`--task torchvision:<model> --weights CKPT --data DIR`) ---------------
    Case("`slimsearch run --data`", "a folder without class subfolders (images directly in train/)",
         "'…/flat/train' holds 0 class subfolder(s) and 4 file(s) directly in it; expected one subfolder per class "
         "(at least two), each holding that class's images", cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data",
         "{images}/flat", "--weights", "{images}/resnet18-3.pt"), needs_run=True, id="data-no-class-folders"),
    Case("`slimsearch run --data`", "a folder without train/",
         "data folder '…' has no train/ folder (it holds ['cats', 'dogs']); expected ImageFolder layout: …/train/<class>/<image>",
         cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{images}/no-train", "--weights", "{images}/resnet18-3.pt"),
         needs_run=True, id="data-no-train"),
    Case("`slimsearch run --data`", "a file instead of a folder", "data '…' is a file; expected a folder in ImageFolder layout",
         cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{file}", "--weights", "{images}/resnet18-3.pt"),
         needs_run=True, id="data-file"),
    Case("`slimsearch run --data`", "an unreadable image",
         "image '…/unreadable/train/b/broken.png' cannot be read (UnidentifiedImageError: …); expected an image file "
         "that PIL opens", cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{images}/unreadable", "--weights",
                                "{images}/resnet18-3.pt"), needs_run=True, id="data-unreadable-image"),
    Case("`slimsearch run --weights`", "a checkpoint of another architecture",
         "checkpoint '…/resnet34-3.pt' is not a torchvision resnet18 checkpoint: … of its tensors are not in the model "
         "(e.g. 'layer1.2.conv1.weight'); expected the state dict of torchvision resnet18 (is it another architecture?)",
         cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{images}/good", "--weights", "{images}/resnet34-3.pt"),
         needs_run=True, id="weights-architecture"),
    Case("`slimsearch run --weights`", "a checkpoint for another number of classes",
         "checkpoint '…/resnet18-1000.pt' has a 1000-class head (fc.weight is (1000, 512)), but '…/good/train' has 3 "
         "class folders; expected a checkpoint trained on these 3 classes",
         cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{images}/good", "--weights", "{images}/resnet18-1000.pt"),
         needs_run=True, id="weights-classes"),
    Case("`slimsearch run --weights`", "a pickled model instead of a state dict",
         "checkpoint '…/pickled-model.pt' cannot be read with torch.load(weights_only=True) (…); expected a state dict "
         "saved with torch.save(model.state_dict(), path), not a pickled model",
         cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{images}/good", "--weights", "{images}/pickled-model.pt"),
         needs_run=True, id="weights-pickled"),
    Case("`slimsearch run --weights`", "a file that does not exist", "checkpoint '…/nope.pt' does not exist",
         cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{images}/good", "--weights", "{images}/nope.pt"),
         needs_run=True, id="weights-missing"),
    Case("`slimsearch run --data`", "without --weights",
         "task 'torchvision:resnet18' with data '…' needs weights: the checkpoint of resnet18 trained on these classes",
         cli=("run", *IN_GOOD_RUN, *FOLDER_TASK, "--data", "{images}/good"), needs_run=True, id="data-no-weights"),
    Case("`slimsearch run --data`", "with a task that reads its own data",
         "data, weights and image_size are for the tasks 'torchvision:<model>' and 'timm:<model>', but got "
         "data='images' with task='digits'", cli=("run", "--task", "digits", "--data", "images"), id="data-builtin-task"),
    Case("`slimsearch run --task timm:`", "timm not installed",
         "task 'timm:resnet18' needs the timm package, which is not installed; install it with pip install "
         "'slimsearch[timm]'", cli=("run", *IN_GOOD_RUN, "--task", "timm:resnet18", "--data", "{images}/good",
                                    "--weights", "{images}/resnet18-3.pt"), needs_run=True, skip=_timm_installed,
         id="timm-missing"),
    Case("`slimsearch run --image-size`", "zero", "image_size must be an integer > 0, but got image_size=0",
         cli=("run", "--task", "torchvision:resnet18", "--image-size", "0"), id="image-size-zero"),
    Case("`slimsearch run --val-samples`", "zero", "val_samples must be an integer > 0, but got val_samples=0",
         cli=("run", "--val-samples", "0"), id="val-samples-zero"),
    Case("`slimsearch run --steps`", "zero", "finetune.steps must be an integer > 0, but got steps=0",
         cli=("run", "--steps", "0"), id="steps-zero"),
    Case("TOML `loader_workers`", "negative", "loader_workers must be an integer >= 0, but got loader_workers=-1",
         toml={"loader_workers": -1}, id="loader-workers-negative"),
    # --- an existing run: resume, front, report, export ----------------------------------------------
    Case("`slimsearch run` (resume)", "settings that differ from the study's",
         "study 'good' in … was created with different settings (latency_budget: study has '2x', this run asks for "
         "'0.5x'); use another --name", cli=("run", "--runs-dir", "{runs}", "--name", "good", "--task", GOOD,
                                            "--latency-budget", "0.5x", "--trials", "3", "--epochs", "1"),
         needs_run=True, id="resume-mismatch"),
    Case("`slimsearch run` (resume)", "a broken task factory",
         "task factory 'tests.tasks.factories:raises' raised RuntimeError",
         cli=("run", "--runs-dir", "{runs}", "--name", "good", "--task", "tests.tasks.factories:raises"),
         needs_run=True, id="resume-bad-task"),
    Case("`slimsearch front`", "a folder that is not a run",
         "'…' is not a slimsearch run folder (no run.json); expected a folder written by 'slimsearch run'",
         cli=("front", "{tmp}"), names=("{tmp}",), id="front-not-run"),
    Case("`slimsearch space --task`", "unknown task name",
         "unknown task 'cifar99': expected one of 'digits', 'mnist1d', 'torchvision:<model>'",
         cli=("space", "--task", "cifar99"), id="space-task-unknown"),
    Case("`slimsearch space --granularity`", "not layer, stage or global",
         "space.granularity must be one of 'layer', 'stage', 'global', but got granularity='block'",
         cli=("space", "--task", "digits", "--granularity", "block"), id="space-granularity"),
    Case("`slimsearch front`", "a run folder that does not exist", "'…' is not a slimsearch run folder (no run.json)",
         cli=("front", "{tmp}/runs/nope"), names=("nope",), id="front-missing"),
    Case("`slimsearch front`", "no argument", "Missing argument", cli=("front",), id="front-no-argument"),
    Case("`slimsearch front`", "a corrupt run.json",
         "'…/run.json' is unreadable (JSONDecodeError: …); expected the JSON file 'slimsearch run' writes",
         cli=("front", "{corrupt_run}"), needs_run=True, id="front-corrupt-run-file"),
    Case("`slimsearch front`", "a run whose study database is gone",
         "the study database of '…' is missing: '…/study.db' (named in run.json) does not exist",
         cli=("front", "{dbless_run}"), needs_run=True, id="front-missing-db"),
    Case("`slimsearch report -o`", "unwritable output file (under a file)",
         "cannot write the report to '…': part of that path is a file, not a folder",
         cli=("report", "{run}", "-o", "{file}/report.html"), needs_run=True, id="report-unwritable"),
    Case("`slimsearch report -o`", "a folder instead of a file",
         "cannot write the report to '…': it is a folder; expected an HTML file path such as",
         cli=("report", "{run}", "-o", "{tmp}"), needs_run=True, id="report-folder"),
    Case("`slimsearch export --trial`", "a trial that does not exist",
         "trial 99 does not exist in …; exportable trials: 0, 1", cli=("export", "{run}", "--trial", "99"),
         needs_run=True, id="export-no-trial"),
    Case("`slimsearch export --trial`", "not a number", "Invalid value for '--trial': …; got --trial 'last'",
         cli=("export", "{tmp}", "--trial", "last"), id="export-trial-word"),
    Case("`slimsearch export --best-under`", "not a latency", "invalid latency budget 'fast'",
         cli=("export", "{run}", "--best-under", "fast"), needs_run=True, id="export-best-under-word"),
    Case("`slimsearch export --best-under`", "faster than every front model",
         "no front model is under 0.000001ms: the fastest measures", cli=("export", "{run}", "--best-under", "0.000001ms"),
         needs_run=True, id="export-best-under-none"),
    Case("`slimsearch export`", "two ways of choosing a trial", "choose one of --trial, --best-under and --knee",
         cli=("export", "{run}", "--trial", "1", "--knee"), needs_run=True, id="export-two-choices"),
    Case("`slimsearch export --knee`", "a front with no knee",
         "the front in … has no knee (it needs at least three models that trade latency for accuracy)",
         cli=("export", "{run}", "--knee"), needs_run=True, id="export-no-knee"),
    Case("`slimsearch export -o`", "unwritable export folder (under a file)",
         "cannot write to export folder '…': part of that path is a file, not a folder",
         cli=("export", "{run}", "--trial", "1", "-o", "{file}/model"), needs_run=True, id="export-unwritable"),
    Case("`slimsearch export --verify-only`", "without --trial and -o",
         "--verify-only needs --trial N and -o DIR (the export folder to check)",
         cli=("export", "{run}", "--verify-only"), needs_run=True, id="verify-needs-args"),
    Case("`slimsearch export --verify-only`", "a trial that does not exist", "trial 99 does not exist in …",
         cli=("export", "{run}", "--verify-only", "--trial", "99", "-o", "{export_of_1}"), needs_run=True,
         id="verify-no-trial"),
    Case("`slimsearch export --verify-only`", "another trial's export folder",
         "… is not an export of trial 0: it holds trial 1's candidate.json",
         cli=("export", "{run}", "--verify-only", "--trial", "0", "-o", "{export_of_1}"), needs_run=True,
         id="verify-wrong-folder"),
    Case("`slimsearch export --verify-only`", "a folder with no export", "weights.pt is missing from …",
         cli=("export", "{run}", "--verify-only", "--trial", "1", "-o", "{tmp}"), needs_run=True, id="verify-empty"),
    # --- slimsearch demo ------------------------------------------------------------------------------
    Case("`slimsearch demo --trials`", "zero", "trials must be an integer > 0, but got trials=0",
         cli=("demo", "--trials", "0"), id="demo-trials"),
    Case("`slimsearch demo --runs-dir`", "unwritable folder (under a file)",
         "cannot write to run folder '…': part of that path is a file, not a folder",
         cli=("demo", "--runs-dir", "{file}", "--trials", "1"), id="demo-unwritable"),
    # --- the Python API ---------------------------------------------------------------------------------
    Case("`slimsearch.search(...)`", "misspelt keyword",
         "slimsearch.search(): unknown key 'trails'; allowed keys: task, latency_budget, trials",
         call=_search(trails=3), error=ConfigError, id="api-unknown-key"),
    Case("`slimsearch.search(...)`", "unknown task", "unknown task 'cifar99'", call=_search(task="cifar99"),
         error=TaskError, id="api-task"),
    Case("`slimsearch.search(...)`", "a dict instead of keywords",
         "slimsearch.search() takes settings as keywords (search(**settings))",
         call=lambda ctx: slimsearch.search({"task": "digits"}), error=ConfigError, id="api-dict"),
    Case("`slimsearch.search(...)`", "a config file that does not exist", "config file '…' does not exist",
         call=lambda ctx: slimsearch.search(f"{ctx['tmp']}/nope.toml"), error=ConfigError, id="api-config-missing"),
    Case("`slimsearch.search(...)`", "a section that is not a dict",
         "slimsearch.search(): [space] must be a table of settings, but got space='global'",
         call=_search(space="global"), error=ConfigError, id="api-section"),
    Case("`slimsearch.search(...)`", "a user task whose data does not fit the model",
         "the teacher cannot run on example_input of shape (1, 3, 8, 8)",
         call=lambda ctx: slimsearch.search(task="tests.tasks.factories:wrong_channels", runs_dir=ctx["tmp"]),
         error=TaskError, id="api-task-channels"),
    Case("`slimsearch.load(...)`", "a folder that is not a run", "'…' is not a slimsearch run folder (no run.json)",
         call=lambda ctx: slimsearch.load(ctx["tmp"]), error=ConfigError, id="api-load-not-run"),
    Case("`slimsearch.load(...)`", "not a path", "a run folder must be a path such as 'runs/demo', but got None",
         call=lambda ctx: slimsearch.load(None), error=ConfigError, id="api-load-none"),
    Case("`slimsearch.export(...)`", "a trial that does not exist", "trial 99 does not exist in …",
         call=_export(trial=99), error=ExportError, needs_run=True, id="api-export-no-trial"),
    Case("`slimsearch.export(...)`", "a trial number given as a string",
         "trial must be a trial number (an integer such as 3), but got trial='1'", call=_export(trial="1"),
         error=ConfigError, needs_run=True, id="api-export-trial-type"),
    Case("`slimsearch.export(...)`", "unwritable out folder",
         "cannot write to export folder '…': part of that path is a file, not a folder",
         call=_export(trial=1, out="{file}/model"), error=ExportError, needs_run=True, id="api-export-unwritable"),
    Case("`Result.report(out)`", "unwritable output file",
         "cannot write the report to '…': part of that path is a file, not a folder",
         call=lambda ctx: slimsearch.load(ctx["run"]).report(f"{ctx['file']}/report.html"), error=ConfigError,
         needs_run=True, id="api-report-unwritable"),
]


def _pattern(message: str) -> re.Pattern:
    return re.compile(".*?".join(re.escape(piece) for piece in message.split("…")), re.S)


# --- the world the rows run in ---------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    shared: dict  # placeholders every row sees: {file}, {runs}, {run}, then the damaged runs
    results: dict = field(default_factory=dict)  # case id -> {"code", "stdout", "stderr"}
    study_before: dict = field(default_factory=dict)
    study_after: dict = field(default_factory=dict)

    def places(self, case: Case) -> dict:
        """The placeholders for one row, with {tmp} a folder of its own."""
        tmp = self.root / "rows" / case.id
        tmp.mkdir(parents=True, exist_ok=True)
        return {**self.shared, "tmp": str(tmp)}


def _fill(text: str, places: dict) -> str:
    return text.format(**places)


def _fill_toml(settings: dict, places: dict) -> dict:
    return {key: _fill_toml(value, places) if isinstance(value, dict)
            else (_fill(value, places) if isinstance(value, str) else value) for key, value in settings.items()}


def _command(case: Case, places: dict) -> list[str]:
    if case.toml is None:
        return [_fill(arg, places) for arg in case.cli]
    config = Path(places["tmp"]) / "search.toml"
    if isinstance(case.toml, str):
        config.write_text(case.toml)
    else:
        write_toml(config, _fill_toml(case.toml, places))
    return ["run", str(config)]


def _fingerprint(run: Path) -> dict:
    """run.json's bytes and the study's rows: the study is SQLite in WAL mode, where merely
    opening it may move committed pages from the log into study.db without changing a row."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(run / "study.db")) as db:
        rows = "\n".join(db.iterdump())
    return {"study.db rows": hashlib.sha256(rows.encode()).hexdigest(),
            "run.json": hashlib.sha256((run / "run.json").read_bytes()).hexdigest()}


def _make_run(root: Path) -> Path:
    """A finished two-trial search of the tiny user task: what the run-folder rows are aimed at."""
    result = slimsearch.search(task=GOOD, latency_budget="2x", trials=2, name="good", runs_dir=str(root / "runs"),
                               finetune={"epochs": 1.0}, latency={"warmup": 1, "repeats": 10, "rounds": 2})
    return result.run_dir


def _make_image_inputs(root: Path) -> Path:
    """Image folders (good, and broken in each way a row names) and checkpoints (fitting, and not)."""
    import torch
    from PIL import Image

    from tests.tasks.image_data import random_checkpoint

    def image(path: Path, side: int = 32) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side), (200, 30, 60)).save(path)

    for label in ("a", "b", "c"):
        for number in range(2):
            image(root / "good" / "train" / label / f"{number}.png")
            image(root / "good" / "val" / label / f"{number}.png", side=48)  # sizes may differ: images are resized
    for number in range(4):
        image(root / "flat" / "train" / f"{number}.png")
    for label in ("cats", "dogs"):
        image(root / "no-train" / label / "0.png")
        image(root / "unreadable" / "train" / label[0] / "0.png")
    (root / "unreadable" / "train" / "b").mkdir()
    (root / "unreadable" / "train" / "b" / "broken.png").write_text("not an image\n")
    random_checkpoint(root / "resnet18-3.pt", "resnet18", 3)
    random_checkpoint(root / "resnet34-3.pt", "resnet34", 3)
    random_checkpoint(root / "resnet18-1000.pt", "resnet18", 1000, key="state_dict")
    torch.save(torch.nn.Linear(2, 2), root / "pickled-model.pt")
    return root


def _make_damaged_runs(root: Path, run: Path) -> dict:
    from slimsearch.spaces import Candidate

    corrupt = root / "corrupt-run"
    corrupt.mkdir()
    (corrupt / "run.json").write_text("{not json")
    dbless = root / "dbless-run"
    dbless.mkdir()
    info = json.loads((run / "run.json").read_text())
    (dbless / "run.json").write_text(json.dumps({**info, "storage": f"sqlite:///{dbless / 'study.db'}"}))
    # An export folder of trial 1 as far as verification reads before loading models.
    export = root / "export-of-1"
    export.mkdir()
    trial = slimsearch.load(run).study.trials[1]
    (export / "candidate.json").write_text(Candidate.from_dict(trial.user_attrs["candidate"]).to_json(indent=2))
    for name in ("model.onnx", "model.pt2", "weights.pt"):
        (export / name).write_bytes(b"")
    return {"corrupt_run": str(corrupt), "dbless_run": str(dbless), "export_of_1": str(export)}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    (root / "afile").write_text("a file, not a folder\n")
    world = World(root, {"file": str(root / "afile"), "runs": str(root / "runs"), "run": str(root / "runs" / "good"),
                         "images": str(_make_image_inputs(root / "images"))})
    cli_cases = [c for c in CASES if c.call is None and not (c.skip and c.skip())]

    def run_batch(cases: list[Case]) -> None:
        commands = [_command(case, world.places(case)) for case in cases]
        for case, result in zip(cases, slimsearch_cli_batch(commands)):
            world.results[case.id] = result

    # Rows that need no run start at once, in their own process, beside the search that makes the run.
    early = threading.Thread(target=run_batch, args=([c for c in cli_cases if not c.needs_run],))
    early.start()
    try:
        run = _make_run(root)
        world.shared.update(_make_damaged_runs(root, run))
        world.study_before = _fingerprint(run)
        run_batch([c for c in cli_cases if c.needs_run])
        world.study_after = _fingerprint(run)
    finally:
        early.join()
    return world


# --- the tests -----------------------------------------------------------------------------------------


def _one_error_line(result: dict) -> str:
    assert result["code"] == 2, (result["code"], result["stderr"][-3000:])
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    lines = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result["stderr"][-3000:]
    return lines[0]


@pytest.mark.parametrize("case", [c for c in CASES if c.call is None], ids=lambda c: c.id)
def test_cli_refuses_with_one_line(case, world):
    if case.skip and (reason := case.skip()):
        pytest.skip(reason)
    line = _one_error_line(world.results[case.id])
    assert _pattern(case.message).search(line), f"{case.message!r} not in {line!r}"
    for text in case.names:
        assert _fill(text, world.places(case)) in line, line


@pytest.mark.parametrize("case", [c for c in CASES if c.call is not None], ids=lambda c: c.id)
def test_api_refuses_with_the_documented_error(case, world):
    with pytest.raises(case.error) as raised:
        case.call(world.places(case))
    message = str(raised.value)
    assert "\n" not in message and _pattern(case.message).search(message), message


def test_bad_input_on_an_existing_run_leaves_its_study_untouched(world):
    assert world.study_before and world.study_before == world.study_after
    assert sum(t.state.name == "COMPLETE" for t in slimsearch.load(world.shared["run"]).study.trials) == 2


def test_a_batched_row_answers_as_a_fresh_process_does(world, tmp_path):
    alone = slimsearch_cli("run", "--sampler", "grid")
    assert alone.returncode == world.results["sampler"]["code"] == 2
    assert alone.stderr == world.results["sampler"]["stderr"]


def test_export_function_survives_the_exporter_module_being_imported(world):
    import slimsearch.exporter  # noqa: F401  (importing the module must not rebind the API function)

    with pytest.raises(ExportError, match="trial 99 does not exist"):
        slimsearch.export(world.shared["run"], trial=99)


def table() -> str:
    header = "| Entry point | Bad input | Message (stable part; … varies) | Exit code / exception |\n|---|---|---|---|"
    return "\n".join([header, *(case.markdown() for case in CASES)])


def test_docs_list_exactly_these_rows():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and all(ids), "every row needs a unique id"
    page = DOC.read_text(encoding="utf-8")
    documented = [line for line in page.splitlines() if line.startswith("| ")]
    expected = table().splitlines()
    expected = [line for line in expected if line.startswith("| ")]
    assert documented == expected, "docs/bad-input.md is out of date: regenerate it with `python -m tests.test_bad_input`"


if __name__ == "__main__":
    print(table())
