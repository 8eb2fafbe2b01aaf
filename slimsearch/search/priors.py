"""What a search learns before its first trial: layer sensitivity and a few latency probes.

- the layer sensitivity pass (search/sensitivity.py): untuned accuracy with one knob changed;
- latency probes: a handful of candidates spanning the cost features (uniform pruning at two
  ratios, int8, separable convs, low rank, an early exit), then a few random draws of the genome
  (spaces/genome.py: candidates like the proposers' own), each timed against the teacher like a
  trial's first measurement, so that the latency predictor starts from measurements of this
  model on this machine rather than from a guess.

Both are computed once per study, kept in the study (user attr `priors`: every worker, on any
machine, reads the same) and in `runs/<name>/priors.json` for people to read.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slimsearch.search.sensitivity import layer_sensitivity
from slimsearch.spaces.candidate import Candidate
from slimsearch.spaces.encoding import Encoding
from slimsearch.spaces.exits import OFF
from slimsearch.spaces.genome import Genome

PRIORS_ATTR = "priors"
FILE_NAME = "priors.json"
PROBE_RATIOS = (0.5, 0.8)
PRIORS_VERSION = 3  # bump when what the priors hold, or how they are measured, changes
# A time-bounded search spends at most this share of its time on the priors, the sensitivity
# pass at most SENSITIVITY_SHARE of that; the latency probes have the rest. (On resnet18 at the
# bench's budget, 2026-12-05: all 75 sensitivity probes in about 15 s (cut short at 32 s before
# its quant probes shared one calibration pass), then all 28 latency probes in about 32 s; on
# mnist1d the sensitivity pass takes under 2 s and the latency probes about 7 s.)
PRIORS_SHARE = 0.3
SENSITIVITY_SHARE = 0.5
# Random genomes timed after the structured probes. The structured ones change one family
# evenly; the proposers' candidates mix families unevenly, and the fit on structured probes
# alone missed their first proposals by a median 33% on resnet18 (20% on the next two). Replayed
# on 15 resnet18 runs (refit on what was measured before each proposal, then predict it), the
# median error per run fell from 14% to 9.5% with 6 random probes and to 8% with 16 (with the
# exit factor of search/predictors.py; 13% with that factor alone); on digits and mnist1d from
# 4-15% to 3-7% with 16. A time-bounded search times as many as fit its share.
RANDOM_PROBES = 16
RANDOM_PROBE_SEED = 0  # the same probes for the same model: the priors are cached per model


def stored_priors(study) -> dict[str, Any]:
    return study.user_attrs.get(PRIORS_ATTR) or {}


def ensure_priors(study, context, report, *, deadline: float | None = None, compute=None) -> dict[str, Any]:
    """The study's priors, computed and stored first if it has none yet.

    A search of the same teacher, data, space and measurement protocol on this machine reuses
    the last one's (kept in the cache folder, `priors/`): a new budget or name needs no new pass.
    A search bounded by time (`deadline`, a time.time() value) gives the priors at most
    PRIORS_SHARE of what is left; a pass cut short is used, but not cached. `compute` computes
    them (default `compute_priors`, here; the Ray backend's runs it on a target node).
    """
    priors = stored_priors(study)
    if priors:
        return priors
    cached = _cache_path(context)
    if cached is not None and cached.exists():
        priors = json.loads(cached.read_text(encoding="utf-8"))
        report(f"Priors: the layer sensitivity and latency probes of an earlier search of this model ({cached}).")
    else:
        seconds = None if deadline is None else max(5.0, PRIORS_SHARE * (deadline - time.time()))
        priors = (compute or compute_priors)(context, seconds=seconds)
        if cached is not None and priors["sensitivity"]["complete"] and priors["latency_complete"]:
            _write(cached, priors)
        sensitivity = priors["sensitivity"]
        probes = sum(len(by_value) for targets in sensitivity["probes"].values() for by_value in targets.values())
        report(f"Priors: {probes} layer sensitivity probes in {sensitivity['seconds']:.1f} s, "
               f"{len(priors['latency_probes'])} latency probes in {priors['latency_seconds']:.1f} s.")
    study.set_user_attr(PRIORS_ATTR, priors)
    _write(Path(context.run_dir) / FILE_NAME, priors)
    return priors


def _write(path: Path, priors: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(priors, indent=1), encoding="utf-8")
    tmp.replace(path)


def _cache_path(context) -> Path | None:
    """Where this model's priors are cached: keyed by the teacher's weights, the validation data,
    the space, and how and where latency is measured; None when the data cannot be fingerprinted."""
    import hashlib

    from slimsearch.config import default_cache_dir
    from slimsearch.evaluators.train import teacher_fingerprint
    from slimsearch.search.environment import environment_info
    from slimsearch.tasks.loading import fingerprint

    config, task = context.config, context.task
    data = fingerprint(task.search_val)
    if data is None:
        return None
    machine = environment_info(config)
    key = json.dumps([PRIORS_VERSION, teacher_fingerprint(task.teacher), data, context.space.signature(),
                      config.to_dict()["space"], config.to_dict()["target"], config.to_dict()["latency"],
                      machine.get("cpu"), machine.get("versions")], sort_keys=True, default=str)
    return default_cache_dir() / "priors" / f"priors-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def compute_priors(context, *, seconds: float | None = None) -> dict[str, Any]:
    """Sensitivity first, latency probes after; with `seconds`, each stops at its share of it."""
    config, task, space = context.config, context.task, context.space
    started = time.perf_counter()
    sensitivity = layer_sensitivity(space, task, config.space,
                                    seconds=None if seconds is None else SENSITIVITY_SHARE * seconds)
    probes, candidates = [], latency_probe_candidates(Encoding(space), sensitivity)
    latency_started = time.perf_counter()
    tried = 0
    for candidate in candidates:
        if seconds is not None and time.perf_counter() - started > seconds:
            break
        tried += 1
        try:
            probes.append({"candidate": candidate.to_dict(), "ratio": probe_latency(context, candidate)})
        except Exception:  # a user model may not take this change (its trials will say so): one probe fewer
            continue
    return {"sensitivity": sensitivity, "latency_probes": probes, "latency_complete": tried == len(candidates),
            "latency_seconds": round(time.perf_counter() - latency_started, 3)}


def probe_latency(context, candidate: Candidate) -> float:
    """The candidate's first-measurement latency ratio, as a trial takes it (lower bound for exits)."""
    from slimsearch.search.trial import LATENCY_ONLY_CALIBRATION
    from slimsearch.techniques import build_student
    from slimsearch.techniques.quantization import calibrate

    student = build_student(candidate, context.task.teacher, context.task.example_input, context.config.space)
    calibrate(student, context.task.calibration_inputs()[:LATENCY_ONLY_CALIBRATION])  # only timed: see trial.py
    with tempfile.TemporaryDirectory(prefix="slimsearch-probe-") as tmp:
        measured, _ = context.measure(student, Path(tmp), lower_bound=True)
    return measured.student.value_ms / measured.teacher.value_ms


def latency_probe_candidates(encoding: Encoding, sensitivity: dict[str, Any] | None = None) -> list[Candidate]:
    """Candidates spanning the latency features, each family alone and with pruning, the most
    telling first; then RANDOM_PROBES random genomes (shaped by `sensitivity`, as the proposers' are)."""
    knobs = encoding.knobs
    base = encoding.default

    def with_values(row, family: str, pick) -> np.ndarray:
        row = row.copy()
        for column in encoding.columns(family):
            value = pick(knobs[column])
            if value is not None:
                row[column] = value
        return row

    def prune(ratio):
        return lambda knob: min(ratio, knob.domain.high)

    def option(wanted):
        return lambda knob: knob.domain.options.index(wanted) if wanted in knob.domain.options else None

    def smallest_rank(knob):
        return knob.domain.options.index(min(knob.domain.options))

    half, hard = prune(PROBE_RATIOS[0]), prune(PROBE_RATIOS[1])
    int8 = with_values(base, "quant", option("8-uniform"))
    separable = with_values(base, "separable", option(True))
    exits = encoding.columns("exits")
    exit_rows = []
    for column in (exits[:1] + exits[-1:]) if exits else []:
        row = base.copy()
        row[column] = next(i for i, o in enumerate(knobs[column].domain.options) if o != OFF)
        exit_rows.append(row)
    # Uniform changes move work, weights and activations together; the proposers' candidates do
    # not. Two uneven ones let the fit tell them apart: the late half of the pruning groups cut
    # hard (most weights, little of the high-resolution work), and int8 on every other layer (a
    # precision switch at each border). Without them, on resnet18 the fit put its weight on the
    # weights and predicted allocations pruned late at 0.14x and 0.22x that measured 0.26x and 0.36x.
    late = base.copy()
    prune_columns = encoding.columns("prune")
    for column in prune_columns[len(prune_columns) // 2:]:
        late[column] = hard(knobs[column])
    alternate = base.copy()
    for column in encoding.columns("quant")[::2]:
        pick = option("8-uniform")(knobs[column])
        if pick is not None:
            alternate[column] = pick
    # The most telling first: a time-bounded search may stop after any of them.
    rows = [with_values(base, "prune", half), int8, with_values(int8, "prune", half),
            with_values(separable, "prune", half), with_values(base, "prune", hard), *exit_rows[:1],
            with_values(base, "lowrank", smallest_rank), separable, with_values(int8, "prune", hard), late, alternate,
            *exit_rows[1:]]
    genome = Genome(encoding, sensitivity)
    rng = np.random.default_rng(RANDOM_PROBE_SEED)
    rows += list(encoding.snap(genome.random_rows(RANDOM_PROBES, rng)))
    default = encoding.keys(base[None, :])[0]
    unique, seen = [], {default}
    for row, key in zip(rows, encoding.keys(np.array(rows))):
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return encoding.decode(np.array(unique)) if unique else []
