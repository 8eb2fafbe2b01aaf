"""Every knob a search offers builds, trains, runs and exports: a capability probe at discovery.

Discovery (spaces/) reads a model's structure; whether a choice survives what a trial does with it
is another matter: Torch-Pruning may prune a group into shapes a layer cannot take, an exporter may
not know an operator, a head may not export at some map size. So the probe tries it, once per
search: per family, every knob at its most compressing value at once (for pruning also at 0.5, the
sensitivity pass's value; for quantization also at 16 bits, which deploys another way), then every
family together; each candidate built, trained for one step, run, exported to the form a trial
deploys (ONNX, QDQ int8, exit segments) and run in ONNX Runtime against torch. When a check
fails, halving the knobs finds the ones that fail; those are left out of the space with the error
as their reason (never a crash mid-search), and the rest are checked again. A model where
nothing fails costs one check per family and value, plus one.

The outcome is kept in the run folder as `space.json` (knobs per family, every layer left out and
why), so `--jobs` workers, Ray nodes and resumed sessions read the same space without probing
again; `slimsearch space --task ...` prints the same record without running a search.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from slimsearch.spaces import Candidate, Space
from slimsearch.spaces.knobs import Choice, FloatRange, Knob, Untouched

SPACE_FILE = "space.json"
PROBE_VERSION = 2  # bump when the probe checks more, so stored outcomes are redone
PROBE_SAMPLES = 8
PRUNE_MIDDLE = 0.5  # search/sensitivity.py probes every prunable group alone at this ratio
APPLY_ORDER = ("separable", "lowrank", "prune", "quant", "exits")
VERSIONED = ("slimsearch", "torch", "torchvision", "onnx", "onnxruntime", "torch-pruning")


@dataclass(frozen=True)
class Narrowed:
    """A knob kept with a lower ceiling: its values above `high` fail, for `reason`."""

    family: str
    target: str
    high: float
    reason: str


@dataclass(frozen=True)
class ProbeOutcome:
    excluded: tuple[Untouched, ...]
    checks: int
    seconds: float
    narrowed: tuple[Narrowed, ...] = ()
    cached: bool = False  # read from the cache folder: `checks` and `seconds` are the probe's that stored it

    def apply(self, space: Space) -> Space:
        """`space` as the probe leaves it: failing knobs out, narrowed ones with their new ceiling."""
        return space.without(self.excluded).narrowed({(n.family, n.target): n.high for n in self.narrowed})


def probe(space: Space, teacher: torch.nn.Module, example_input: torch.Tensor, inputs: torch.Tensor,
          settings) -> ProbeOutcome:
    """The knobs of `space` that fail to build, train, run or export, each with its reason.

    A ratio knob whose extreme fails but a milder value works (a user model that needs some of a
    layer's channels) is kept with its range narrowed to the highest value that passed.
    `inputs`: a few real inputs (at least two), which also calibrate quantized layers.
    """
    started = time.perf_counter()
    checker = _Checker(space, teacher, example_input, inputs, settings)
    baseline = checker.check({})
    if baseline is not None:  # every knob would fail the same way: one line now, not a probe of each
        from slimsearch.errors import TaskError

        raise TaskError(f"the teacher itself fails to {baseline}; a search fine-tunes and exports every candidate, "
                        f"so the model must train (return logits in training mode) and export as it is")
    by_family: dict[str, list[Knob]] = {}
    for knob in space.knobs:
        if knob.stage is not None:  # per-layer knobs; run-wide ones (distill, the exit criterion) build nothing
            by_family.setdefault(knob.family, []).append(knob)
    excluded: dict[tuple[str, str], Untouched] = {}
    ceilings: dict[tuple[str, str], Narrowed] = {}

    def capped(pick):
        return lambda knob: (pick(knob) if knob_key(knob) not in ceilings
                             else min(pick(knob), ceilings[knob_key(knob)].high))

    for family in sorted(by_family, key=_apply_rank):
        for label, pick in _probe_values(family):
            remaining = [k for k in by_family[family] if knob_key(k) not in excluded]
            for knob, reason in checker.failing(remaining, {}, capped(pick), label).items():
                high = _highest_passing(checker, knob, capped(pick)(knob)) if isinstance(knob.domain, FloatRange) else None
                if high is None:
                    excluded[knob_key(knob)] = Untouched(family, knob.target, reason)
                else:
                    ceilings[knob_key(knob)] = Narrowed(family, knob.target, high, reason)
    # Every family together, each at its extreme, in the order a student is built.
    extreme = capped(lambda knob: knob.extreme)
    accepted: dict[str, dict[str, Any]] = {}
    combined = {family: {k.target: extreme(k) for k in knobs if knob_key(k) not in excluded}
                for family, knobs in by_family.items()}
    if len([f for f in combined if combined[f]]) > 1 and checker.check(combined) is not None:
        for family in sorted(combined, key=_apply_rank):
            knobs = [k for k in by_family[family] if knob_key(k) not in excluded]
            others = ", ".join(accepted) or "the others"
            failing = checker.failing(knobs, accepted, extreme,
                                      f"{_value_label(family)}, combined with {others} at their extremes")
            for knob, reason in failing.items():
                excluded[knob_key(knob)] = Untouched(family, knob.target, reason)
                ceilings.pop(knob_key(knob), None)
            accepted[family] = {k.target: extreme(k) for k in knobs if knob_key(k) not in excluded}
    ordered = [excluded[knob_key(k)] for k in space.knobs if knob_key(k) in excluded]
    narrowed = [ceilings[knob_key(k)] for k in space.knobs if knob_key(k) in ceilings]
    return ProbeOutcome(tuple(ordered), checker.checks, round(time.perf_counter() - started, 2), tuple(narrowed))


NARROWING_STEPS = (0.75, 0.5, 0.25)  # of the failed value: where a ratio knob is tried again, alone


def _highest_passing(checker: "_Checker", knob: Knob, failed: float) -> float | None:
    """The highest grid value below `failed` at which `knob` alone passes and still changes the
    model (three tries), or None: a ratio that rounds to no pruning at all is no knob."""
    domain = knob.domain
    for share in NARROWING_STEPS:
        value = _nearest(knob, domain.low + share * (failed - domain.low))
        if value <= domain.low or value >= failed:
            continue
        if checker.check({knob.family: {knob.target: value}}) is None:
            return value if checker.last_parameters < checker.teacher_parameters else None
    return None


def cached_probe(space: Space, teacher: torch.nn.Module, example_input: torch.Tensor, inputs: torch.Tensor,
                 settings) -> ProbeOutcome:
    """`probe`, remembered in the cache folder by what decides its outcome: the architecture (module
    classes and their source, the discovered knobs), the input shape, the space settings and the
    versions of everything that builds and exports. A model whose code cannot be read is probed
    every time."""
    from slimsearch.config import default_cache_dir

    key = _probe_key(space, teacher, example_input, settings)
    path = default_cache_dir() / "probes" / f"{key}.json" if key else None
    if path is not None and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return ProbeOutcome(tuple(Untouched(**row) for row in stored["excluded"]), int(stored["checks"]),
                                float(stored["seconds"]), tuple(Narrowed(**row) for row in stored["narrowed"]),
                                cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    outcome = probe(space, teacher, example_input, inputs, settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_space_file(path, {**_outcome_rows(outcome), "checks": outcome.checks, "seconds": outcome.seconds})
    return outcome


def _probe_key(space: Space, teacher: torch.nn.Module, example_input: torch.Tensor, settings) -> str | None:
    import hashlib
    import inspect

    sources = {}
    for module in teacher.modules():
        cls = type(module)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name not in sources:
            try:
                sources[name] = hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()[:16]
            except (OSError, TypeError):
                return None
    described = [PROBE_VERSION, space.signature(), repr(teacher), sorted(sources.items()), list(example_input.shape),
                 str(example_input.dtype), repr(settings), versions(), _package_digest()]
    return hashlib.sha256(json.dumps(described, default=str).encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def _package_digest() -> str:
    """slimsearch's own source: a changed transform or exporter may change what passes."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _outcome_rows(outcome: ProbeOutcome) -> dict[str, list[dict]]:
    return {"excluded": [{"family": u.family, "target": u.target, "reason": u.reason} for u in outcome.excluded],
            "narrowed": [dataclasses.asdict(n) for n in outcome.narrowed]}


def knob_key(knob: Knob) -> tuple[str, str]:
    return knob.family, knob.target


def _apply_rank(family: str) -> int:
    return APPLY_ORDER.index(family) if family in APPLY_ORDER else len(APPLY_ORDER)


def _value_label(family: str) -> str:
    return {"prune": "pruned at its highest ratio", "quant": "at its fewest bits", "separable": "made separable",
            "lowrank": "factorised at its lowest rank", "exits": "with every exit on"}.get(family, "at its extreme")


def _probe_values(family: str) -> list[tuple[str, Callable[[Knob], Any]]]:
    values = [(_value_label(family), lambda knob: knob.extreme)]
    if family == "prune":
        values.append((f"pruned at {PRUNE_MIDDLE:g}", lambda knob: _nearest(knob, PRUNE_MIDDLE)))
    if family == "quant":
        values.append(("at 16 bits", lambda knob: "16-float" if "16-float" in knob.domain.options else None))
    return values


def _nearest(knob: Knob, value: float) -> Any:
    domain = knob.domain
    if isinstance(domain, FloatRange):
        value = min(max(value, domain.low), domain.high)
        if domain.step:
            value = domain.low + round((value - domain.low) / domain.step) * domain.step
        return round(value, 6)
    if isinstance(domain, Choice):
        return min(domain.options, key=lambda option: abs(float(option) - value))
    return value


class _Checker:
    """Builds and checks candidates: one change at a time on top of the space's default candidate."""

    def __init__(self, space: Space, teacher, example_input, inputs, settings):
        self.base = space.default_candidate().to_dict()["choices"]
        self.teacher, self.example_input, self.settings = teacher, example_input, settings
        self.inputs = inputs.detach().cpu()
        self.checks = 0
        self.teacher_parameters = sum(p.numel() for p in teacher.parameters())
        self.last_parameters = self.teacher_parameters  # of the student the last check built

    def failing(self, knobs: list[Knob], fixed: dict[str, dict[str, Any]], pick, label: str) -> dict[Knob, str]:
        """The knobs (of one family) that fail when set by `pick` on top of `fixed`, with reasons."""
        knobs = [k for k in knobs if pick(k) is not None]
        if not knobs:
            return {}
        family = knobs[0].family

        def check(subset: list[Knob]) -> str | None:
            return self.check({**fixed, family: {k.target: pick(k) for k in subset}})

        failing = self._bisect(knobs, check, label)
        remaining = [k for k in knobs if k not in failing]
        if failing and remaining and check(remaining) is not None:
            failing.update(self._one_by_one(remaining, check, label))
        return failing

    def _bisect(self, knobs: list[Knob], check, label: str) -> dict[Knob, str]:
        error = check(knobs)
        if error is None:
            return {}
        if len(knobs) == 1:
            return {knobs[0]: f"{label}, it fails to {error}"}
        middle = len(knobs) // 2
        failing = self._bisect(knobs[:middle], check, label)
        failing.update(self._bisect(knobs[middle:], check, label))
        # Each half passes alone but not both together: take the knobs one by one.
        return failing or self._one_by_one(knobs, check, label)

    def _one_by_one(self, knobs: list[Knob], check, label: str) -> dict[Knob, str]:
        accepted: list[Knob] = []
        failing = {}
        for knob in knobs:
            error = check([*accepted, knob])
            if error is None:
                accepted.append(knob)
            else:
                failing[knob] = f"{label}, together with the other knobs it fails to {error}"
        return failing

    def check(self, changes: dict[str, dict[str, Any]]) -> str | None:
        """None if the candidate builds, trains, runs and exports; else what failed and why."""
        choices = {family: {**self.base.get(family, {}), **values} for family, values in self.base.items()}
        for family, values in changes.items():
            choices[family] = {**choices.get(family, {}), **values}
        self.checks += 1
        stage = "build"
        try:
            student = self._build(Candidate(choices))
            self.last_parameters = sum(p.numel() for p in student.parameters())
            stage = "train"
            self._train_step(student)
            stage = "run"
            reference = self._run(student)
            stage = "export"
            with tempfile.TemporaryDirectory(prefix="slimsearch-probe-") as tmp:
                mismatch = self._compare_deployed(student, reference, Path(tmp))
        except Exception as error:
            if out_of_memory(error):
                raise _out_of_memory_error(error, stage, changes) from error
            return f"{stage} ({describe_error(error)})"
        return mismatch

    def _build(self, candidate: Candidate) -> torch.nn.Module:
        from slimsearch.techniques import build_student

        return build_student(candidate, self.teacher, self.example_input, self.settings)

    def _train_step(self, student: torch.nn.Module) -> None:
        from slimsearch.evaluators.exit_deploy import is_early_exit

        student.train()
        batch = self.inputs[:2]
        outputs = student.exit_logits(batch) if is_early_exit(student) else [student(batch)]
        loss = sum(output.float().logsumexp(dim=1).mean() for output in outputs)
        loss.backward()
        student.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _run(self, student: torch.nn.Module) -> list[torch.Tensor]:
        from slimsearch.evaluators.exit_deploy import is_early_exit
        from slimsearch.techniques.quantization import calibrate

        student.eval()
        calibrate(student, self.inputs)
        outputs = student.exit_logits(self.inputs) if is_early_exit(student) else [student(self.inputs)]
        for output in outputs:
            if output.dim() != 2 or len(output) != len(self.inputs) or not bool(torch.isfinite(output).all()):
                raise RuntimeError(f"it returns {tuple(output.shape)} {'non-finite ' if output.dim() == 2 else ''}"
                                   f"outputs for {len(self.inputs)} inputs")
        return outputs

    def _compare_deployed(self, student, reference: list[torch.Tensor], workdir: Path) -> str | None:
        """Export to the trial's deployment form, run it in ONNX Runtime, compare with torch."""
        import numpy as np

        from slimsearch.evaluators.deploy import onnx_predict, onnx_session
        from slimsearch.evaluators.exit_deploy import export_early_exit, is_early_exit
        from slimsearch.evaluators.exit_runner import EarlyExitRunner
        from slimsearch.evaluators.quantized_deploy import export_deployed
        from slimsearch.techniques.quantization import quantized_layers

        if is_early_exit(student):
            export_early_exit(student, self.example_input, workdir / "exits", calibration_inputs=self.inputs)
            exits = len(student.thresholds)
            # Everyone out at the first exit, then no one out early: both ends, whatever the heads say.
            first = EarlyExitRunner(workdir / "exits", thresholds=[0.0] * exits).predict(self.inputs.numpy())[0]
            last = EarlyExitRunner(workdir / "exits", thresholds=[1.01] * exits).predict(self.inputs.numpy())[0]
            deployed = [torch.from_numpy(np.asarray(first)), torch.from_numpy(np.asarray(last))]
            expected = [reference[0], reference[-1]]
        else:
            path = export_deployed(student, self.example_input, workdir / "student.onnx", calibration_inputs=self.inputs)
            deployed = [onnx_predict(onnx_session(path, threads=1), self.inputs)]
            expected = reference[-1:]
        quantized = bool(quantized_layers(student))
        for got, want in zip(deployed, expected):
            if tuple(got.shape) != tuple(want.shape) or not bool(torch.isfinite(got).all()):
                return f"run in ONNX Runtime (it returns {tuple(got.shape)} outputs where torch returns {tuple(want.shape)})"
            scale = max(1.0, float(want.abs().max()))
            if not quantized and not torch.allclose(got, want.float(), rtol=1e-3, atol=1e-3 * scale):
                return (f"match torch in ONNX Runtime (max logit difference {float((got - want).abs().max()):.3g} "
                        f"against logits up to {scale:.3g})")
        return None


# How running out of memory reads: Python's MemoryError, torch's CPU allocator and CUDA, C++'s
# std::bad_alloc (which the exporters re-raise inside their own errors).
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "bad_alloc", "MemoryError", "Cannot allocate memory")


def out_of_memory(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from, is the machine running out of memory."""
    while error is not None:
        if isinstance(error, MemoryError) or any(sign in str(error) for sign in OUT_OF_MEMORY):
            return True
        error = error.__cause__ or error.__context__
    return False


def _out_of_memory_error(error: BaseException, stage: str, changes: dict) -> Exception:
    """A check that ran out of memory says nothing of its knobs: leaving them out would shrink the
    space for the machine's sake (a sweep on 16 GB lost 126 of vit_l_32's layers that way), so the
    probe stops and says so."""
    from slimsearch.errors import TaskError

    families = ", ".join(sorted(changes)) or "no knob"
    return TaskError(f"the capability probe ran out of memory at the {stage} step of a candidate ({families} set): "
                     f"{describe_error(error)}. That says nothing of which layers can be compressed, so no layer "
                     f"was left out for it; run on a machine with more memory, or with a smaller input")


def describe_error(error: BaseException) -> str:
    """'RuntimeError in _conv_forward: Given groups=10, ...': the error, where, its first line."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" in {frames[-1].name}" if frames else ""
    message = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}{where}" + (f": {message}" if message else "")


def probe_inputs(task, count: int = PROBE_SAMPLES) -> torch.Tensor:
    """The first few training inputs of `task` (any map-style dataset of (input, label) pairs)."""
    train = task.train
    tensors = getattr(train, "tensors", None)
    if tensors is not None:
        inputs = tensors[0][:count]
    else:
        inputs = torch.stack([torch.as_tensor(train[i][0]) for i in range(min(count, len(train)))])
    if len(inputs) < 2:  # a training step needs two samples (batch norm); repeat a lone one
        inputs = torch.cat([inputs, inputs])
    return inputs


def versions() -> dict[str, str | None]:
    from slimsearch.search.environment import _version

    return {name: _version(name) for name in VERSIONED}


def searched_space(task, config, run_dir: Path | None = None, *, report: Callable[[str], None] | None = None) -> Space:
    """The space a search explores: discovered, then probed, or read from `run_dir/space.json`
    when an earlier session (or the driver of these workers) probed the same discovered space."""
    space = Space.discover(task.teacher, task.example_input, config.space, target=config.target)
    path = Path(run_dir) / SPACE_FILE if run_dir is not None else None
    stored = read_space_file(path) if path is not None else None
    if stored is not None and _still_valid(stored, space):
        rows = stored["probe"]
        return ProbeOutcome(tuple(Untouched(**row) for row in rows["excluded"]), rows["checks"], rows["seconds"],
                            tuple(Narrowed(**row) for row in rows["narrowed"])).apply(space)
    outcome = cached_probe(space, task.teacher, task.example_input, probe_inputs(task), config.space)
    probed = outcome.apply(space)
    if path is not None:
        write_space_file(path, space_record(probed, discovered=space, outcome=outcome, task=task.name))
    if report is not None:
        left_out = (f"; {len(outcome.excluded)} knobs left out and {len(outcome.narrowed)} narrowed ({SPACE_FILE} "
                    f"says why)" if outcome.excluded or outcome.narrowed else "")
        done = "as probed before (cached)" if outcome.cached else f"{outcome.checks} checks in {outcome.seconds:.1f} s"
        report(f"Capability probe (each knob built, trained a step, run and exported): {done}{left_out}.")
    return probed


def _still_valid(stored: dict, space: Space) -> bool:
    probe_info = stored.get("probe") or {}
    return (stored.get("discovered_signature") == space.signature() and probe_info.get("version") == PROBE_VERSION
            and probe_info.get("versions") == versions() and isinstance(probe_info.get("excluded"), list)
            and isinstance(probe_info.get("narrowed"), list))


def space_record(space: Space, *, discovered: Space, outcome: ProbeOutcome | None, task: str) -> dict[str, Any]:
    """What `space.json` holds and `slimsearch space` prints: knobs per family, every layer left out and why."""
    from slimsearch.spaces.space import _domain_text

    families: dict[str, dict[str, list]] = {}
    narrowed = {(n.family, n.target): n for n in (outcome.narrowed if outcome is not None else ())}
    for knob in space.knobs:
        row = {"target": knob.target, "stage": knob.stage, "values": _domain_text(knob.domain)}
        if knob_key(knob) in narrowed:
            row["narrowed"] = f"higher values fail: {narrowed[knob_key(knob)].reason}"
        families.setdefault(knob.family, {"knobs": [], "left_out": []})["knobs"].append(row)
    for untouched in space.untouched:
        families.setdefault(untouched.family, {"knobs": [], "left_out": []})["left_out"].append(
            {"target": untouched.target, "reason": untouched.reason})
    record = {"format": "slimsearch-space", "version": 1, "task": task, "granularity": space.granularity,
              "signature": space.signature(), "discovered_signature": discovered.signature(),
              "parameters": len(space.parameters()), "families": families}
    if outcome is not None:
        record["probe"] = {"version": PROBE_VERSION, "versions": versions(), "checks": outcome.checks,
                           "seconds": outcome.seconds, "cached": outcome.cached, **_outcome_rows(outcome)}
    return record


def read_space_file(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "slimsearch-space" else None


def write_space_file(path: Path, record: dict) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
