"""Replay the latency predictor on finished searches: before each trial, refit on what came before it
and predict it, as the search did; print the median absolute error per run and per task.

    python bench/replay_latency.py RUN_DIR [RUN_DIR ...] [--steady-teacher] [--no-probes]

--steady-teacher divides each trial's first measurement by the run's running median teacher latency
instead of the teacher's latency in the trial's own window (what if the divisor did not move);
--no-probes leaves out the priors' latency probes (measured in another process, against that
process's teacher windows). A way to try a change to the predictor on real histories before a bench.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

FIRST_LATENCY = "first_latency_ratio"


def _rebased(trials: list, teacher_ms: float | None) -> list:
    """Copies of `trials` whose first latency ratio is over the running median of the teacher's
    window latencies (the study's own first) rather than over the trial's window's."""
    windows = [teacher_ms] if teacher_ms else []
    rebased = []
    for trial in trials:
        trial = copy.deepcopy(trial)
        window_ms, first = trial.user_attrs.get("teacher_latency_ms"), trial.user_attrs.get(FIRST_LATENCY)
        if window_ms and first is not None:
            windows.append(float(window_ms))
            trial.user_attrs[FIRST_LATENCY] = first * window_ms / float(np.median(windows))
        rebased.append(trial)
    return rebased


def replay(run: Path, *, steady_teacher: bool, probes: bool, tasks: dict) -> dict:
    import optuna

    from slimsearch.config import SearchConfig
    from slimsearch.search.capability import searched_space
    from slimsearch.search.origins import LONG_FINETUNE
    from slimsearch.search.priors import stored_priors
    from slimsearch.search.proposals import create_engine
    from slimsearch.tasks import create_task

    saved = json.loads((run / "run.json").read_text())["config"]
    config = SearchConfig.from_mapping({k: v for k, v in saved.items() if v is not None}, source=str(run))
    task = tasks.setdefault((saved["task"], saved["seed"]), create_task(saved["task"], seed=saved["seed"]))
    space = searched_space(task, config, run)
    study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'study.db'}")
    teacher = study.user_attrs.get("teacher") or {}
    engine = create_engine(config, space, task, stored_priors(study), teacher, seed=saved["seed"])
    if not probes:
        engine.knowledge._probes = []
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    if steady_teacher:
        trials = _rebased(trials, teacher.get("latency_ms"))
    errors = []
    for index, trial in enumerate(trials):
        first = trial.user_attrs.get(FIRST_LATENCY)
        if first is None or trial.user_attrs.get("origin") == LONG_FINETUNE:
            continue
        engine.knowledge.refit(engine._history(trials[:index]))
        row = engine._history(trials[:index + 1]).records[-1].row
        predicted = float(engine.knowledge.predict(row[None, :]).lower_bound_ratio[0])
        errors.append(predicted / first - 1.0)
    errors = np.array(errors)
    return {"run": run.name, "task": saved["task"], "trials": len(errors),
            "median_abs_error": float(np.median(np.abs(errors))) if len(errors) else np.nan,
            "median_signed_error": float(np.median(errors)) if len(errors) else np.nan}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished searches' folders (each with run.json and study.db)")
    parser.add_argument("--steady-teacher", action="store_true")
    parser.add_argument("--no-probes", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    missing = [str(run) for run in args.runs if not (run / "run.json").is_file() or not (run / "study.db").is_file()]
    if missing:
        parser.error(f"not a finished search's folder (run.json and study.db expected): {', '.join(missing)}")
    tasks: dict = {}
    rows = []
    for run in args.runs:
        rows.append(replay(run, steady_teacher=args.steady_teacher, probes=not args.no_probes, tasks=tasks))
        row = rows[-1]
        print(f"{row['run']}: {row['trials']} trials, median error {row['median_abs_error']:.1%} "
              f"(signed {row['median_signed_error']:+.1%})", flush=True)
    table = pd.DataFrame(rows).groupby("task")[["median_abs_error", "median_signed_error"]].median()
    print(table.to_string(float_format=lambda x: f"{x:.1%}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
