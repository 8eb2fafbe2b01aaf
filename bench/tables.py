"""The bench's tables and plots, from its per-run rows (summary.csv) and curves (anytime.csv).

Kept apart from the runner (search_quality.py) so that `--tables-only` redraws them without
running a search, and so that each file stays readable in one sitting.
"""

from __future__ import annotations

import math
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from slimsearch.config import SearchConfig
from slimsearch.search.environment import environment_info, int8_kernels_note

BUDGETS = {"tight": 0.25, "mid": 0.5, "loose": 0.75}  # as in search_quality.py
COLUMNS = ["hypervolume", *(f"best_acc_{label}_budget" for label in BUDGETS), "speedup_at_1pt",
           "front_from_proposals", "latency_mape", "trials_per_hour", "overhead_share", "over_budget_max_s"]


def medians(summary: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in COLUMNS if c in summary]
    table = summary.groupby(["task", "method"], sort=False)[columns].median().reset_index()
    for reference in ("random", "hand"):
        by_task = table[table["method"] == reference].set_index("task")
        table[f"hv_vs_{reference}"] = table["hypervolume"] / table["task"].map(by_task["hypervolume"])
        table[f"speedup_vs_{reference}"] = table["speedup_at_1pt"] / table["task"].map(by_task["speedup_at_1pt"])
    return table


def markdown(table: pd.DataFrame, environment: dict, command: str, seeds: list[int], provenance: str | None = None) -> str:
    def pct(value: float) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.1%}"

    def ratio(value: float) -> str:
        return "-" if value is None or math.isnan(value) or math.isinf(value) else f"{value:.2f}x"

    budgets = " / ".join(f"{b:g}x" for b in BUDGETS.values())
    # Tables redrawn from earlier runs (--tables-only) say where those ran: this machine may not be it.
    where = provenance or (
        f"Machine: {environment['cpu']}{int8_kernels_note(environment)}, {environment['cpu_count']} "
        f"cores, {environment['runtime']} with {environment['threads']} thread(s), batch {environment['batch_size']}; "
        f"torch {environment['versions']['torch']}, onnxruntime {environment['versions']['onnxruntime']}, "
        f"optuna {environment['versions']['optuna']}. Command: `{command}`.")
    lines = [
        f"Medians over seeds {', '.join(map(str, seeds))} (a best accuracy or speed-up: over the seeds that have "
        f"a model there; '-': none has). {where}",
        "",
        f"| task | method | hypervolume | vs hand | vs random | best acc at {budgets} | speed-up at ≤1 pt (vs hand) | "
        f"front from proposers | latency error | trials/h | overhead | longest over-budget trial |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        best = " / ".join(pct(getattr(row, f"best_acc_{label}_budget")) for label in BUDGETS)
        speedup = "-" if math.isnan(row.speedup_at_1pt) else f"{row.speedup_at_1pt:.2f}x ({ratio(row.speedup_vs_hand)})"
        longest = "-" if math.isnan(row.over_budget_max_s) else f"{row.over_budget_max_s:.2f} s"
        lines.append(f"| {row.task} | {row.method} | {row.hypervolume:.3f} | {ratio(row.hv_vs_hand)} | "
                     f"{ratio(row.hv_vs_random)} | {best} | {speedup} | {pct(row.front_from_proposals)} | "
                     f"{pct(row.latency_mape)} | {row.trials_per_hour:.0f} | {pct(row.overhead_share)} | {longest} |")
    return "\n".join(lines) + "\n"


def anytime_medians(curves: pd.DataFrame, step: float = 5.0) -> pd.DataFrame:
    """Median hypervolume over seeds on a common time grid, per task and method (a step function per run)."""
    rows = []
    for (task, method), runs in curves.groupby(["task", "method"], sort=False):
        end = runs["seconds"].max()
        grid = np.arange(0.0, end + step, step)
        per_seed = []
        for _, run in runs.groupby("seed"):
            run = run.sort_values("seconds")
            index = np.searchsorted(run["seconds"].to_numpy(), grid, side="right") - 1
            values = np.where(index >= 0, run["hypervolume"].to_numpy()[np.maximum(index, 0)], 0.0)
            per_seed.append(values)
        for seconds, value in zip(grid, np.median(np.array(per_seed), axis=0)):
            rows.append({"task": task, "method": method, "seconds": seconds, "hypervolume": value})
    return pd.DataFrame(rows)


def write_html(summary: pd.DataFrame, curves: pd.DataFrame | None, path: Path) -> None:
    import plotly.express as px
    import plotly.io as pio

    figures = []
    if curves is not None and len(curves):
        anytime = px.line(anytime_medians(curves), x="seconds", y="hypervolume", color="method", facet_col="task",
                          line_shape="hv", title="Anytime: median hypervolume against wall time since the search "
                                                 "started (the hand grid stops when its 16 points are done)")
        anytime.update_xaxes(matches=None)
        anytime.update_yaxes(matches=None, showticklabels=True)
        figures.append(anytime)
    figures.append(px.strip(summary, x="task", y="hypervolume", color="method", hover_data=["seed", "trials"],
                            title="Hypervolume per seed (accuracy loss up to 10%, log speed-up, log compression; "
                                  "higher is better)"))
    best = summary.melt(id_vars=["task", "method", "seed"], value_vars=[f"best_acc_{b}_budget" for b in BUDGETS],
                        var_name="budget", value_name="best validation accuracy")
    figures.append(px.strip(best, x="budget", y="best validation accuracy", color="method", facet_col="task",
                            title="Best accuracy under each latency budget"))
    body = "\n".join(pio.to_html(figure, full_html=False, include_plotlyjs=(i == 0)) for i, figure in enumerate(figures))
    path.write_text(f"<!doctype html><meta charset=utf-8><title>slimsearch bench</title>{body}", encoding="utf-8")


def write_tables(summary: pd.DataFrame, curves: pd.DataFrame | None, out: Path, seeds: list[int], command: str,
                 provenance: str | None = None) -> None:
    text = markdown(medians(summary), environment_info(SearchConfig()), command, seeds, provenance)
    (out / "summary.md").write_text(text, encoding="utf-8")
    write_html(summary, curves, out / "summary.html")
    print(text)
    print(f"wrote {out / 'summary.csv'}, anytime.csv, summary.md and summary.html ({platform.node()})", file=sys.stderr)
