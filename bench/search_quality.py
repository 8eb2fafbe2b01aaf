"""Is the search worth running? slimsearch's default search against random search and the hand baseline.

    .venv/bin/python bench/search_quality.py            # make bench: 3 tasks x 3 methods x 3 seeds
    .venv/bin/python bench/search_quality.py --quick    # make bench-quick: shorter runs, same tables

For every task and seed, in this one process, three searches get the same wall time (the time
budget counts from the start of each search, so teacher loading, the budget check and the default
search's sensitivity pass are inside it) and the same fine-tuning budget per trial
(`finetune.epochs`):

- default: `slimsearch run` as shipped: NSGA-II, warm start shaped by the layer sensitivity
  pass, multi-fidelity screening, latency-first and the latency cache;
- random: Optuna's random sampler over the same joint space, every candidate fine-tuned in full
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
- over_budget_max_s: the longest trial stopped by latency-first (an over-budget candidate).

Writes bench/results/summary.csv (one row per task, method and seed), summary.md (medians over
seeds, the table the README quotes), summary.html (plotly) and the runs under bench/results/runs.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from slimsearch.config import SearchConfig
from slimsearch.reports.data import teacher_info, trials_frame
from slimsearch.reports.insights import fine_tuned_feasible
from slimsearch.search import storage as st
from slimsearch.search.driver import run_search
from slimsearch.search.environment import environment_info
from slimsearch.search.pareto import hypervolume
from slimsearch.spaces import Space
from slimsearch.spaces.optuna_adapter import candidate_params
from slimsearch.spaces.warm_start import hand_baseline
from slimsearch.tasks import create_task

HV_REFERENCE = (0.10, 0.0, 0.0)  # accuracy loss, -log10 speed-up, -log10 compression
BUDGETS = {"tight": 0.25, "mid": 0.5, "loose": 0.75}  # latency relative to the teacher's
METHODS = ("hand", "random", "default")
SEEDS = (0, 1, 2)
# Wall seconds per search: full (make bench) and quick (make bench-quick).
TASKS = {
    "digits": {"full": 75, "quick": 40},
    "mnist1d": {"full": 50, "quick": 30},
    "torchvision:resnet18": {"full": 150, "quick": 75},
}
TRIALS_CAP = 500  # a search is bounded by its time budget; this only has to be out of reach


def method_settings(method: str) -> dict:
    if method == "default":
        return {}
    if method in ("random", "hand"):
        return {"sampler": "random", "warm_start": False, "finetune": {"screen_epochs": 0}}
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")


def run_one(task_name: str, task, method: str, seed: int, seconds: float, runs_dir: Path, console) -> dict:
    name = f"{task_name.replace(':', '-')}-{method}-s{seed}"
    config = SearchConfig.from_mapping({
        "task": task_name, "latency_budget": f"{BUDGETS['loose']}x", "trials": TRIALS_CAP, "name": name,
        "runs_dir": str(runs_dir), "seed": seed, "time_budget": seconds, **method_settings(method),
    }, source="bench")
    shutil.rmtree(config.run_dir, ignore_errors=True)  # every run starts afresh: no resuming an old one
    if method == "hand":
        points = _queue_hand_baseline(config, task)
        config = SearchConfig.from_mapping({"trials": points}, source="bench", base=config)
    started = time.perf_counter()
    result = run_search(config, console=console, quiet=True, task=task)
    wall = time.perf_counter() - started
    return {"task": task_name, "method": method, "seed": seed, "time_budget_s": seconds,
            **run_figures(result.study, wall)}


def _queue_hand_baseline(config: SearchConfig, task) -> int:
    """Create the hand baseline's study with its points queued; the search runs them in order."""
    import optuna

    space = Space.discover(task.teacher, task.example_input, config.space, batch_size=config.target.batch_size)
    st.prepare_run_dir(config.run_dir)
    study = optuna.create_study(study_name=config.run_name, storage=st.default_storage_url(config.run_dir),
                                directions=list(st.DIRECTIONS))
    points = hand_baseline(space)
    for candidate in points:
        study.enqueue_trial(candidate_params(candidate, space))
    return len(points)


def run_figures(study, wall_s: float) -> dict:
    trials = trials_frame(study)
    teacher = teacher_info(study)
    eligible = trials[fine_tuned_feasible(trials)]
    teacher_accuracy = float(teacher["val_accuracy"])
    latency = eligible["latency_ms"].astype(float) / eligible["teacher_latency_ms"].astype(float)
    objectives = pd.DataFrame({
        "accuracy_loss": (1.0 - eligible["accuracy"].astype(float) / teacher_accuracy).clip(lower=0.0),
        "log_latency": np.log10(latency),
        "log_size": np.log10(eligible["size_bytes"].astype(float) / float(teacher["size_bytes"])),
    }).dropna()
    row = {"hypervolume": hypervolume(objectives.to_numpy().tolist(), HV_REFERENCE) / HV_REFERENCE[0]}
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
    return row


def overhead_share(finished) -> float:
    """1 - (seconds inside the trial stages) / (wall time from the first trial's start to the last one's end)."""
    if not finished:
        return math.nan
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    staged = sum(sum((t.user_attrs.get("seconds") or {}).values()) for t in finished)
    return max(0.0, 1.0 - staged / span) if span > 0 else math.nan


def medians(summary: pd.DataFrame) -> pd.DataFrame:
    columns = ["hypervolume", *(f"best_acc_{label}_budget" for label in BUDGETS), "speedup_at_1pt",
               "trials_per_hour", "overhead_share", "over_budget_max_s"]
    table = summary.groupby(["task", "method"], sort=False)[columns].median().reset_index()
    random_hv = table[table["method"] == "random"].set_index("task")["hypervolume"]
    table["hv_vs_random"] = table["hypervolume"] / table["task"].map(random_hv)
    return table


def markdown(table: pd.DataFrame, environment: dict, command: str, seeds: list[int]) -> str:
    def pct(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.1%}"

    def num(value: float, digits: int = 3) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    budgets = " / ".join(f"{b:g}x" for b in BUDGETS.values())
    lines = [
        f"Medians over seeds {', '.join(map(str, seeds))} (a best accuracy or speed-up: over the seeds that have "
        f"a model there; '-': none has). Machine: {environment['cpu']}, {environment['cpu_count']} "
        f"cores, {environment['runtime']} with {environment['threads']} thread(s), batch {environment['batch_size']}; "
        f"torch {environment['versions']['torch']}, onnxruntime {environment['versions']['onnxruntime']}, "
        f"optuna {environment['versions']['optuna']}. Command: `{command}`.",
        "",
        f"| task | method | hypervolume | vs random | best acc at {budgets} | speed-up at ≤1 pt | trials/h | "
        f"overhead | longest over-budget trial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        best = " / ".join(pct(getattr(row, f"best_acc_{label}_budget")) for label in BUDGETS)
        speedup = "-" if math.isnan(row.speedup_at_1pt) else f"{row.speedup_at_1pt:.2f}x"
        if row.method == "random":
            versus = "1.00x"
        elif math.isinf(row.hv_vs_random) or math.isnan(row.hv_vs_random):
            versus = "random: 0"  # random search found no fine-tuned model within budget
        else:
            versus = f"{row.hv_vs_random:.2f}x"
        longest = "-" if math.isnan(row.over_budget_max_s) else f"{row.over_budget_max_s:.2f} s"
        lines.append(f"| {row.task} | {row.method} | {num(row.hypervolume)} | {versus} | {best} | "
                     f"{speedup} | {row.trials_per_hour:.0f} | {pct(row.overhead_share)} | {longest} |")
    return "\n".join(lines) + "\n"


def write_html(summary: pd.DataFrame, path: Path) -> None:
    import plotly.express as px
    import plotly.io as pio

    hv = px.strip(summary, x="task", y="hypervolume", color="method", hover_data=["seed", "trials"],
                  title="Hypervolume per seed (accuracy loss up to 10%, log speed-up, log compression; higher is better)")
    best = summary.melt(id_vars=["task", "method", "seed"], value_vars=[f"best_acc_{b}_budget" for b in BUDGETS],
                        var_name="budget", value_name="best validation accuracy")
    acc = px.strip(best, x="budget", y="best validation accuracy", color="method", facet_col="task",
                   title="Best accuracy under each latency budget")
    body = "\n".join(pio.to_html(figure, full_html=False, include_plotlyjs=(i == 0)) for i, figure in enumerate([hv, acc]))
    path.write_text(f"<!doctype html><meta charset=utf-8><title>slimsearch bench</title>{body}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter searches (make bench-quick)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, help=f"default: {' '.join(map(str, SEEDS))}; 0 with --quick")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--tables-only", action="store_true",
                        help="redo summary.md and summary.html from OUT/summary.csv without running searches")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else list(SEEDS))
    if args.tables_only:
        summary = pd.read_csv(args.out / "summary.csv")
        write_tables(summary, args.out, sorted(summary["seed"].unique().tolist()), "make bench")
        return 0
    from rich.console import Console

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console(stderr=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task_name in args.tasks:
        seconds = TASKS[task_name]["quick" if args.quick else "full"]
        for seed in args.seeds:
            task = create_task(task_name, seed=seed)  # the teacher is trained once per seed, then cached
            for method in args.methods:
                console.print(f"{task_name} seed {seed}: {method} for {seconds} s ...", highlight=False)
                row = run_one(task_name, task, method, seed, seconds, args.out / "runs", console)
                console.print(f"  hypervolume {row['hypervolume']:.4f}, {row['trials']} trials, "
                              f"{row['full_finetunes']} fine-tuned feasible, overhead {row['overhead_share']:.1%}",
                              highlight=False)
                rows.append(row)
                pd.DataFrame(rows).to_csv(args.out / "summary.csv", index=False)  # nothing lost if a later run fails
    command = "make bench-quick" if args.quick else "make bench"
    if argv is not None or len(sys.argv) > 2 or (len(sys.argv) == 2 and not args.quick):
        command = "python bench/search_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_tables(pd.DataFrame(rows), args.out, args.seeds, command)
    return 0


def write_tables(summary: pd.DataFrame, out: Path, seeds: list[int], command: str) -> None:
    text = markdown(medians(summary), environment_info(SearchConfig()), command, seeds)
    (out / "summary.md").write_text(text, encoding="utf-8")
    write_html(summary, out / "summary.html")
    print(text)
    print(f"wrote {out / 'summary.csv'}, summary.md and summary.html ({platform.node()})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
