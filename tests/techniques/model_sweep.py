"""Every torchvision classification model through the whole space: the sweep behind
tests/techniques/test_torchvision_sweep.py and the table in README.md.

For each model of `torchvision.models.list_models(module=torchvision.models)` (random weights,
10 classes, batch-norm statistics from a few random batches) at 64 x 64, or the model's minimum
input size where that is larger: discovery with the capability probe, then one random candidate
per knob family and one with every family, each built, run, exported to its deployment form (ONNX,
QDQ int8, exit segments) and run in ONNX Runtime against torch; and the early-exit stage names
found again after every substitution. A model either passes everywhere or leaves out, with the
reason, the layers a family cannot take; a crash anywhere fails it.

ViTs are built for 64 x 64 with their builder's `image_size` (see `size_arguments`). Models above
PARAM_LIMIT parameters (torchvision's own count, read from its weights metadata without building
anything), and models that only run at inputs above LARGEST_INPUT (MaxViT's 7 x 7 partitions need
224 x 224), are skipped with that reason: on a CPU each takes minutes per build and export (MaxViT
at 224 took over 10 GB of memory here), and the sweep builds and exports every model about fifteen times. The limit was 32M parameters; timed
alone on 2 cores, larger ones take minutes, not hours (alexnet 207 s, vgg11 630 s), so it is 150M
now. Each model runs in a process of its own, under a memory limit.

    python -m tests.techniques.model_sweep [MODEL ...] --out DIR    # run it, one JSON per model
    python -m tests.techniques.model_sweep MODEL --costly --out DIR # a model skipped for its cost, on a bigger machine
    python -m tests.techniques.model_sweep --table DIR              # the README table from those files
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

SIZE = 64
PARAM_LIMIT = 150_000_000
LARGEST_INPUT = 128
MEMORY_LIMIT = 16 * 2**30  # address space per model's process: a runaway model fails alone
SAMPLES = 8
FAMILIES = ("prune", "quant", "separable", "lowrank", "exits")
CPU_ABSENT = ("precision",)  # families a CPU target never searches


def sweep_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _meta(name: str) -> dict:
    import torchvision

    return list(torchvision.models.get_model_weights(name))[0].meta


def skip_reason(name: str) -> str | None:
    """Why the sweep leaves `name` out, or None: only for its cost on a CPU, stated with the figure."""
    params = _meta(name)["num_params"]
    if params > PARAM_LIMIT:
        return (f"{params / 1e6:.1f}M parameters (torchvision's count) > {PARAM_LIMIT / 1e6:.0f}M: on a CPU its ~15 "
                f"builds and exports take too long for the sweep")
    size = input_size(name)
    if size > LARGEST_INPUT:
        return (f"runs only at {size} x {size} inputs and up (torchvision's minimum; it fails at {SIZE} x {SIZE}): "
                f"on a CPU its ~15 builds, training steps and exports at that size take too long and too much "
                f"memory for the sweep")
    return None


@functools.lru_cache(maxsize=None)
def input_size(name: str) -> int:
    """64, or torchvision's minimum input size for a model that does not run at 64 x 64 (torchvision
    states minimums for its weights: Swin's 224 is one, yet Swin runs at 64). A ViT is built for its
    input (see `size_arguments`): 64, or the next multiple of its patch (vit_h_14: 70)."""
    patch = _vit_patch(name)
    if patch:
        return -(-SIZE // patch) * patch
    minimum = max(_meta(name).get("min_size", (1, 1)))
    if minimum <= SIZE or _runs_at(name, SIZE):
        return SIZE
    return minimum


def _runs_at(name: str, size: int) -> bool:
    try:
        model = build_teacher(name, size)
        with torch.no_grad():
            return model(torch.randn(2, 3, size, size)).shape == (2, 10)
    except Exception:  # it does not take inputs this small
        return False


# Models with auxiliary classifiers return a tuple in training mode; as one fine-tunes them, they
# are built without (their training forward then returns logits, as a search needs).
AUX_LOGITS = ("googlenet", "inception_v3")


def size_arguments(name: str, size: int) -> dict:
    """What a builder needs to run at `size`: ViT's position embeddings are made for one image size,
    an argument of its builder (224 by default), which a user fine-tuning at another resolution sets
    too; it must be a multiple of the patch size."""
    patch = _vit_patch(name)
    return {"image_size": size} if patch and size % patch == 0 else {}


def _vit_patch(name: str) -> int | None:
    return int(name.rsplit("_", 1)[1]) if name.startswith("vit_") else None


def build_teacher(name: str, size: int) -> torch.nn.Module:
    import torchvision

    extra = {"aux_logits": False} if name in AUX_LOGITS else {}
    extra.update(size_arguments(name, size))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(name.encode()))
        model = torchvision.models.get_model(name, weights=None, num_classes=10, **extra)
        model.train()
        with torch.no_grad():  # batch-norm statistics of a fresh model are 0 / 1; make them real
            for _ in range(2):
                model(torch.randn(4, 3, size, size))
    return model.eval()


def random_choices(knobs, rng: random.Random) -> dict:
    from slimsearch.spaces.knobs import FloatRange

    choices = {}
    for knob in knobs:
        domain = knob.domain
        if isinstance(domain, FloatRange):
            steps = int(round((domain.high - domain.low) / domain.step)) if domain.step else 100
            value = round(domain.low + rng.randint(0, steps) * (domain.high - domain.low) / max(steps, 1), 6)
        else:
            value = rng.choice(domain.options)
        choices[knob.target] = value
    if knobs and knobs[0].family == "exits":  # at least one exit on, or the candidate has none
        stages = [k for k in knobs if k.stage is not None]
        if stages and all(choices[k.target] == "off" for k in stages):
            choices[rng.choice(stages).target] = 0.5
    return choices


def check_candidate(candidate, teacher, example, inputs, workdir: Path) -> dict:
    """Build, run, export and run in ONNX Runtime; {'ok': bool, 'error': str, 'agreement': float}."""
    from slimsearch.evaluators.deploy import onnx_predict, onnx_session
    from slimsearch.evaluators.exit_deploy import export_early_exit, is_early_exit
    from slimsearch.evaluators.exit_runner import EarlyExitRunner
    from slimsearch.evaluators.quantized_deploy import export_deployed
    from slimsearch.techniques import build_student
    from slimsearch.techniques.exits import exit_outcomes
    from slimsearch.techniques.quantization import calibrate, quantized_layers

    stage = "build"
    try:
        student = build_student(candidate, teacher, example).eval()
        calibrate(student, inputs)
        stage = "run"
        with torch.no_grad():
            if is_early_exit(student):
                reference, taken = exit_outcomes(student.exit_logits(inputs), student.thresholds, student.criterion)
            else:
                reference = student(inputs)
        stage = "export"
        if is_early_exit(student):
            export_early_exit(student, example, workdir / "exits", calibration_inputs=inputs)
            stage = "run in ONNX Runtime"
            logits, exits = EarlyExitRunner(workdir / "exits").predict(inputs.numpy())
        else:
            path = export_deployed(student, example, workdir / "student.onnx", calibration_inputs=inputs)
            stage = "run in ONNX Runtime"
            logits = onnx_predict(onnx_session(path, threads=1), inputs).numpy()
        quantized = bool(quantized_layers(student))
        agreement = float((np.asarray(logits).argmax(1) == reference.numpy().argmax(1)).mean())
        if not quantized:
            scale = max(1.0, float(reference.abs().max()))
            rows = np.ones(len(inputs), dtype=bool) if not is_early_exit(student) else exits == taken.numpy()
            if not np.allclose(np.asarray(logits)[rows], reference.numpy()[rows], rtol=1e-3, atol=1e-3 * scale):
                raise AssertionError(f"ONNX Runtime logits differ from torch by "
                                     f"{np.abs(np.asarray(logits)[rows] - reference.numpy()[rows]).max():.3g}")
        return {"ok": True, "agreement": agreement, "quantized": quantized}
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:300]
        return {"ok": False, "error": f"{stage}: {type(error).__name__}: {first}"}


def exit_stages(model: torch.nn.Module, example: torch.Tensor) -> list[str]:
    from slimsearch.spaces.exit_points import find_exit_points, trace

    return [point.stage for point in find_exit_points(trace(model), example)]


def sweep_model(name: str, costly: bool = False) -> dict:
    """The sweep's record of one model (see the module docstring); `costly`: sweep it even when
    skip_reason would skip it for its cost (on a machine that has the time and memory)."""
    from slimsearch.config import SpaceConfig
    from slimsearch.search.capability import probe
    from slimsearch.spaces import Candidate, Space
    from slimsearch.techniques import build_student

    reason = skip_reason(name)
    if reason is not None and not costly:
        return {"model": name, "status": "skipped", "reason": reason}
    started = time.perf_counter()
    size = input_size(name)
    teacher = build_teacher(name, size)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, 3, size, size, generator=generator)
    inputs = torch.randn(SAMPLES, 3, size, size, generator=generator)
    settings = SpaceConfig()
    discovered = Space.discover(teacher, example, settings)
    outcome = probe(discovered, teacher, example, inputs, settings)
    space = outcome.apply(discovered)
    record = {"model": name, "input": size, "status": "pass",
              "params": sum(p.numel() for p in teacher.parameters()),
              "knobs": {family: sum(1 for k in space.knobs if k.family == family and k.stage is not None)
                        for family in FAMILIES},
              "left_out_by_probe": [[u.family, u.target, u.reason] for u in outcome.excluded],
              "narrowed_by_probe": [[n.family, n.target, n.high, n.reason] for n in outcome.narrowed],
              "left_out_at_discovery": [[u.family, u.target, u.reason] for u in discovered.untouched],
              "probe": {"checks": outcome.checks, "seconds": outcome.seconds}, "candidates": {}}
    rng = random.Random(zlib.crc32(name.encode()))
    defaults = space.default_candidate().to_dict()["choices"]
    per_family = {family: [k for k in space.knobs if k.family == family] for family in FAMILIES}
    candidates = {family: Candidate({**defaults, family: random_choices(knobs, rng)})
                  for family, knobs in per_family.items() if any(k.stage is not None for k in knobs)}
    everything = {**defaults, **{family: random_choices(knobs, rng) for family, knobs in per_family.items() if knobs}}
    candidates["all"] = Candidate(everything)
    for label, candidate in candidates.items():
        with tempfile.TemporaryDirectory(prefix="slimsearch-sweep-") as tmp:
            record["candidates"][label] = check_candidate(candidate, teacher, example, inputs, Path(tmp))
    # Stage names after every substitution, pruning and quantization: what a candidate's exits name.
    teacher_stages = [k.target for k in per_family["exits"] if k.stage is not None]
    if teacher_stages:
        substituted = Candidate({**everything, "exits": {k.target: k.default for k in per_family["exits"]}})
        try:
            record["exit_stages"] = {"teacher": teacher_stages,
                                     "substituted": exit_stages(build_student(substituted, teacher, example), example)}
        except Exception as error:
            record["exit_stages"] = {"teacher": teacher_stages, "error": f"{type(error).__name__}: {error}"[:300]}
    if not all(result["ok"] for result in record["candidates"].values()) or (
            "exit_stages" in record and record["exit_stages"].get("substituted") != teacher_stages):
        record["status"] = "fail"
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["machine"] = f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    return record


def _reason_summary(rows: list[list[str]]) -> str:
    """'prune: 3 (fails to run: RuntimeError ...)' per family, for the table."""
    by_family: dict[str, list[str]] = {}
    for family, _target, reason in rows:
        by_family.setdefault(family, []).append(reason)
    parts = []
    for family, reasons in by_family.items():
        first = reasons[0].replace("|", "/")
        parts.append(f"{family}: {len(reasons)} ({first[:110]}{'…' if len(first) > 110 else ''})")
    return "; ".join(parts)


def table(records: list[dict]) -> str:
    lines = ["| model | input | prune | quant | separable | lowrank | exits | left out (by the probe or, `*`, the whole family) | result |",
             "|---|---|---|---|---|---|---|---|---|"]
    for record in sorted(records, key=lambda r: r["model"]):
        if record["status"] in ("skipped", "crash"):
            what = f"skipped: {record['reason']}" if record["status"] == "skipped" else f"CRASH: {record['error']}"
            lines.append(f"| {record['model']} | - | - | - | - | - | - | - | {what} |")
            continue
        # A whole family left out everywhere for the CPU target (half precision: CUDA only) says nothing of the model.
        whole = [row for row in record["left_out_at_discovery"] if row[1] == "*" and row[0] not in CPU_ABSENT]
        narrowed = [[family, target, f"narrowed to {high:g}: {reason}"]
                    for family, target, high, reason in record.get("narrowed_by_probe", [])]
        left_out = _reason_summary(record["left_out_by_probe"] + whole + narrowed) or "none"
        knobs = " | ".join(str(record["knobs"][family]) for family in FAMILIES)
        result = record["status"] if record["status"] == "pass" else "FAIL: " + "; ".join(
            f"{label}: {r.get('error', '')}" for label, r in record["candidates"].items() if not r["ok"])
        where = f", {record['machine']}" if "machine" in record else ""
        lines.append(f"| {record['model']} | {record['input']} | {knobs} | {left_out} | {result} ({record['seconds']:.0f} s{where}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="models to sweep (default: all)")
    parser.add_argument("--out", type=Path, help="folder for one JSON record per model")
    parser.add_argument("--table", type=Path, help="print the README table from a folder of records")
    parser.add_argument("--costly", action="store_true",
                        help="also the models skipped for their cost on a small CPU (for a bigger machine)")
    parser.add_argument("--memory-gb", type=float, default=MEMORY_LIMIT / 2**30,
                        help="address space per model's process (vit_l_32's probe needs about 22)")
    args = parser.parse_args(argv)
    if args.table:
        print(table([json.loads(path.read_text()) for path in sorted(args.table.glob("*.json"))]))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    models = args.models or sweep_models()
    if len(models) > 1:  # one process per model: memory does not pile up, and a crash stays one model's
        for name in models:
            if not (args.out / f"{name}.json").exists():
                subprocess.run([sys.executable, "-m", "tests.techniques.model_sweep", name, "--out", str(args.out),
                                "--memory-gb", str(args.memory_gb), *(["--costly"] if args.costly else [])])
        return 0
    (name,) = models
    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        record = sweep_model(name, costly=args.costly)
    except BaseException as error:  # a crash (or running out of memory) is a result too: the table shows it
        record = {"model": name, "status": "crash", "error": f"{type(error).__name__}: {error}"[:500]}
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=1))
    print(name, record["status"], record.get("seconds", ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
