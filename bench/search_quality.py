"""Is the search worth running? slimsearch's default search against random search and the hand baseline.

    .venv/bin/python bench/search_quality.py            # make bench: 3 tasks x 3 methods x 3 seeds
    .venv/bin/python bench/search_quality.py --quick    # make bench-quick: shorter runs, same tables
    .venv/bin/python bench/search_quality.py --tables-only --provenance "Machine: ..., commit ..., commands ..."
                                                        # redraw the tables from merged rows, saying where they ran

For every task and seed, in this one process, four searches get the same wall time (the time
budget counts from the start of each search, so teacher loading, the budget check and the
priors pass (layer sensitivity and latency probes, never reused from an earlier run here) are
inside it) and the same fine-tuning budget per trial (`finetune.epochs`):

- default: `slimsearch run` as shipped: a short warm start, then the proposers in turn (Optuna's
  TPE over the sensitivity-shaped genome, the predictor-guided inner search, the budgeted
  allocation), multi-fidelity screening, latency-first and the latency cache;
- search: the same without the warm start (`warm_start = false`): what the proposers find alone;
- random: Optuna's random sampler over every per-layer knob, every candidate fine-tuned in full
  (no warm start, no screening; latency-first still stops hopeless candidates, as it is part of
  how any candidate is scored here);
- hand: uniform structured pruning with Torch-Pruning at 0.1 ... 0.8, each fine-tuned with
  distillation, each followed by its int8 form: what a user would do by hand.

Figures (per run; accuracy is validation accuracy, the objective every method optimises):

- hypervolume of the fine-tuned, feasible trials, objectives normalised to the teacher and all
  minimised: accuracy loss = 1 - accuracy / teacher accuracy, -log10(speed-up) with the latency
  ratio timed in the trial's own window, and -log10(compression) of the packed bytes. Reference
  point HV_REFERENCE = (0.10, 0, 0): a model losing more than 10% of the teacher's accuracy, or
  no faster or no smaller than the teacher, adds nothing. Speed-up and compression count in
  decades because compression pays multiplicatively: on a linear scale a single 7x-faster,
  50x-smaller model already covers 84% of the box, and 20x or 500x could hardly add more. The
  volume is divided by the reference's 0.10, so its unit is decades x decades at no accuracy
  loss (a 10x faster, 10x smaller model at the teacher's accuracy scores 1.0);
- best accuracy under three latency budgets (BUDGETS, relative to the teacher), the loosest
  being the search's own `latency_budget`;
- speed-up at no more than 1 point of accuracy loss (absolute, against the teacher);
- trials per hour (completed and failed, over the run's wall time);
- overhead share: the engine's bookkeeping (sampling, storage writes, progress, artifact upload)
  as a share of trial time, i.e. 1 - (build + latency + fine-tune + evaluate seconds) / (wall
  time from the first trial's start to the last trial's end);
- over_budget_max_s: the longest trial stopped by latency-first (an over-budget candidate);
- front_from_proposals: the share of the final Pareto front (accuracy, latency, bytes) whose
  candidates did not come from the warm start (or the hand baseline's queue): a long fine-tune
  counts as the trial whose candidate it trained again;
- latency_mape / accuracy_spearman: the predictors' error on the trials they proposed,
  predicted before each trial ran and compared with what it measured (reports/insights.py);
- the anytime curve: hypervolume against wall time since the search started, per run.

Writes bench/results/summary.csv (one row per task, method and seed), anytime.csv (the curves),
summary.md (medians over seeds, the table the README quotes), summary.html (plotly) and the runs
under bench/results/runs. Tables and plots: bench/tables.py.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from slimsearch.config import SearchConfig, default_cache_dir
from slimsearch.reports.data import front_frame, teacher_info, trials_frame
from slimsearch.reports.insights import fine_tuned_feasible, predictor_errors
from slimsearch.search import storage as st
from slimsearch.search.driver import run_search
from slimsearch.search.origins import LONG_FINETUNE, PREDICTED_ATTR, origin_of
from slimsearch.search.pareto import hypervolume
from slimsearch.spaces import Space
from slimsearch.spaces.optuna_adapter import candidate_params
from slimsearch.spaces.warm_start import hand_baseline
from slimsearch.tasks import create_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import write_tables  # noqa: E402  (bench/ is a folder of scripts, not a package)

HV_REFERENCE = (0.10, 0.0, 0.0)  # accuracy loss, -log10 speed-up, -log10 compression
BUDGETS = {"tight": 0.25, "mid": 0.5, "loose": 0.75}  # latency relative to the teacher's
METHODS = ("hand", "random", "search", "default")
SEEDS = (0, 1, 2)
# Wall seconds per search: full (make bench: three times the quick budgets) and quick (make bench-quick).
TASKS = {
    "digits": {"full": 120, "quick": 40},
    "mnist1d": {"full": 90, "quick": 30},
    "torchvision:resnet18": {"full": 225, "quick": 75},
}
HAND_ORIGINS = ("warm_start", "queued")  # front models that a grid, not a proposer, supplied
TRIALS_CAP = 500  # a search is bounded by its time budget; this only has to be out of reach


def method_settings(method: str) -> dict:
    if method == "default":
        return {}
    if method == "search":
        return {"warm_start": False}
    if method in ("random", "hand"):
        return {"sampler": "random", "proposers": ["sampler"], "parametrisation": "layer", "warm_start": False,
                "finetune": {"screen_epochs": 0}}
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")


def run_one(task_name: str, task, method: str, seed: int, seconds: float, runs_dir: Path, console) -> dict:
    name = f"{task_name.replace(':', '-')}-{method}-s{seed}"
    config = SearchConfig.from_mapping({
        "task": task_name, "latency_budget": f"{BUDGETS['loose']}x", "trials": TRIALS_CAP, "name": name,
        "runs_dir": str(runs_dir), "seed": seed, "time_budget": seconds, **method_settings(method),
    }, source="bench")
    shutil.rmtree(config.run_dir, ignore_errors=True)  # every run starts afresh: no resuming an old one
    # Every method pays for its own priors pass: none reuses an earlier run's (search/priors.py).
    shutil.rmtree(default_cache_dir() / "priors", ignore_errors=True)
    shutil.rmtree(default_cache_dir() / "probes", ignore_errors=True)  # nor the capability probe's
    if method == "hand":
        points = _queue_hand_baseline(config, task)
        config = SearchConfig.from_mapping({"trials": points}, source="bench", base=config)
    started, started_wall = time.perf_counter(), time.time()
    result = run_search(config, console=console, quiet=True, task=task)
    wall = time.perf_counter() - started
    figures, curve = run_figures(result.study, wall, started=started_wall)
    keys = {"task": task_name, "method": method, "seed": seed}
    return {**keys, "time_budget_s": seconds, **figures}, [{**keys, **point} for point in curve]


def _queue_hand_baseline(config: SearchConfig, task) -> int:
    """Create the hand baseline's study with its points queued; the search runs them in order."""
    import optuna

    space = Space.discover(task.teacher, task.example_input, config.space, target=config.target)
    st.prepare_run_dir(config.run_dir)
    study = optuna.create_study(study_name=config.run_name, storage=st.default_storage_url(config.run_dir),
                                directions=list(st.DIRECTIONS))
    points = hand_baseline(space)
    for candidate in points:
        study.enqueue_trial(candidate_params(candidate, space))
    return len(points)


def objectives(eligible: pd.DataFrame, teacher: dict) -> pd.DataFrame:
    """The hypervolume's normalised objectives (see the module doc), one row per fine-tuned feasible trial."""
    latency = eligible["latency_ms"].astype(float) / eligible["teacher_latency_ms"].astype(float)
    return pd.DataFrame({
        "accuracy_loss": (1.0 - eligible["accuracy"].astype(float) / float(teacher["val_accuracy"])).clip(lower=0.0),
        "log_latency": np.log10(latency),
        "log_size": np.log10(eligible["size_bytes"].astype(float) / float(teacher["size_bytes"])),
    }, index=eligible.index).dropna()


def normalised_hypervolume(points: pd.DataFrame) -> float:
    return hypervolume(points.to_numpy().tolist(), HV_REFERENCE) / HV_REFERENCE[0]


def anytime_curve(study, trials: pd.DataFrame, teacher: dict, started: float) -> list[dict]:
    """(seconds since the search started, hypervolume of the trials finished by then), at every trial's end."""
    finished = {t.number: t.datetime_complete.timestamp() for t in study.get_trials(deepcopy=False)
                if t.datetime_complete is not None}
    eligible = trials[fine_tuned_feasible(trials)]
    points = objectives(eligible, teacher)
    curve = []
    for number, when in sorted(finished.items(), key=lambda item: item[1]):
        done = [i for i in points.index if finished.get(int(trials.loc[i, "trial"]), math.inf) <= when]
        curve.append({"seconds": when - started, "hypervolume": normalised_hypervolume(points.loc[done])})
    return curve


def run_figures(study, wall_s: float, *, started: float | None = None) -> tuple[dict, list[dict]]:
    trials = trials_frame(study)
    teacher = teacher_info(study)
    eligible = trials[fine_tuned_feasible(trials)]
    teacher_accuracy = float(teacher["val_accuracy"])
    latency = eligible["latency_ms"].astype(float) / eligible["teacher_latency_ms"].astype(float)
    row = {"hypervolume": normalised_hypervolume(objectives(eligible, teacher))}
    for label, budget in BUDGETS.items():
        under = eligible[latency <= budget]
        row[f"best_acc_{label}_budget"] = float(under["accuracy"].max()) if len(under) else math.nan
    close = eligible[eligible["accuracy"].astype(float) >= teacher_accuracy - 0.01]
    row["speedup_at_1pt"] = float(close["speedup"].max()) if len(close) else math.nan
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "FAIL")]
    row["trials"] = len(finished)
    row["full_finetunes"] = len(eligible)
    row["trials_per_hour"] = len(finished) / wall_s * 3600
    row["overhead_share"] = overhead_share(finished)
    stopped = [t.duration.total_seconds() for t in finished
               if str(t.user_attrs.get("stopped_early") or "").startswith("latency-first")]
    row["over_budget_trials"] = len(stopped)
    row["over_budget_max_s"] = max(stopped) if stopped else math.nan
    row["wall_s"] = wall_s
    row["teacher_val_accuracy"] = teacher_accuracy
    front = front_frame(study, trials)
    row["front_size"] = len(front)
    origins = candidate_origins(study)
    row["front_from_proposals"] = (float((~front["trial"].map(origins).isin(HAND_ORIGINS)).mean())
                                   if len(front) else math.nan)
    errors = predictor_errors(trials)
    row["latency_mape"], row["latency_mape_samples"] = errors["latency_mape"], errors["latency_samples"]
    row["accuracy_spearman"] = errors["accuracy_spearman"]
    curve = anytime_curve(study, trials, teacher, started) if started is not None else []
    return row, curve


def candidate_origins(study) -> dict[int, str]:
    """Trial number -> where its candidate came from: its origin, or for a long fine-tune the origin
    of the trial it trained again (a warm-start point trained longer is still the warm start's)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    origins = {}
    for number, trial in trials.items():
        origin = origin_of(trial.user_attrs)
        extends = (trial.user_attrs.get(PREDICTED_ATTR) or {}).get("extends")
        if origin == LONG_FINETUNE and extends is not None and int(extends) in trials:
            origin = origin_of(trials[int(extends)].user_attrs)
        origins[number] = origin
    return origins


def overhead_share(finished) -> float:
    """1 - (seconds inside the trial stages) / (wall time from the first trial's start to the last one's end)."""
    if not finished:
        return math.nan
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    staged = sum(sum((t.user_attrs.get("seconds") or {}).values()) for t in finished)
    return max(0.0, 1.0 - staged / span) if span > 0 else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter searches (make bench-quick)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, help=f"default: {' '.join(map(str, SEEDS))}; 0 with --quick")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--tables-only", action="store_true",
                        help="redo summary.md and summary.html from OUT/summary.csv without running searches")
    parser.add_argument("--provenance", help="with --tables-only: where and how the rows were measured (machine, "
                                             "commit, commands), said in summary.md instead of this machine's")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else list(SEEDS))
    if args.tables_only:
        summary = pd.read_csv(args.out / "summary.csv")
        anytime = pd.read_csv(args.out / "anytime.csv") if (args.out / "anytime.csv").exists() else None
        write_tables(summary, anytime, args.out, sorted(summary["seed"].unique().tolist()), "make bench",
                     args.provenance)
        return 0
    from rich.console import Console

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console(stderr=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], []
    for task_name in args.tasks:
        seconds = TASKS[task_name]["quick" if args.quick else "full"]
        for seed in args.seeds:
            task = create_task(task_name, seed=seed)  # the teacher is trained once per seed, then cached
            for method in args.methods:
                console.print(f"{task_name} seed {seed}: {method} for {seconds} s ...", highlight=False)
                row, curve = run_one(task_name, task, method, seed, seconds, args.out / "runs", console)
                console.print(f"  hypervolume {row['hypervolume']:.4f}, {row['trials']} trials, "
                              f"{row['full_finetunes']} fine-tuned feasible, overhead {row['overhead_share']:.1%}, "
                              f"front {row['front_size']} ({row['front_from_proposals']:.0%} from proposers)",
                              highlight=False)
                rows.append(row)
                curves += curve
                pd.DataFrame(rows).to_csv(args.out / "summary.csv", index=False)  # nothing lost if a later run fails
                pd.DataFrame(curves).to_csv(args.out / "anytime.csv", index=False)
    command = "make bench-quick" if args.quick else "make bench"
    if argv is not None or len(sys.argv) > 2 or (len(sys.argv) == 2 and not args.quick):
        command = "python bench/search_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_tables(pd.DataFrame(rows), pd.DataFrame(curves), args.out, args.seeds, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
