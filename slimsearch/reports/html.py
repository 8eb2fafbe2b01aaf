"""The report page: one self-contained HTML file (plotly.js embedded, opens with no network).

`build_report` gathers the data (frames from `reports.data`, insights from `reports.insights`),
`figures` draws it, and this module lays it out. Every string from user code (run, task and
layer names, failure reasons) is escaped here or in `figures.esc` before it reaches the page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from slimsearch.reports import page_parts as parts


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, computed before anything is drawn."""

    run_name: str
    task: str
    budget_label: str
    budget_ms: float | None
    teacher: dict[str, Any]
    environment: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame
    status: pd.Series
    matrix: pd.DataFrame
    history: pd.DataFrame
    stages: pd.DataFrame
    picks: dict
    origins: pd.DataFrame
    predictor_errors: dict


def build_report(result) -> ReportData:
    from slimsearch.reports import data, insights

    trials, front, teacher = result.trials, result.front, result.teacher
    config = result.config
    budget_ms = config.latency_budget.limit_ms(teacher["latency_ms"]) if teacher.get("latency_ms") else None
    return ReportData(
        run_name=result.run_dir.name, task=str(config.task), budget_label=str(config.latency_budget),
        budget_ms=budget_ms, teacher=teacher, environment=result.environment, trials=trials, front=front,
        status=data.trial_status(trials, front), matrix=data.layer_matrix(trials),
        history=insights.hypervolume_history(trials, teacher), stages=insights.stage_seconds(trials),
        picks=insights.picks(front, teacher), origins=insights.origin_table(trials, front),
        predictor_errors=insights.predictor_errors(trials))


def _figures_html(report: ReportData) -> dict[str, str]:
    import plotly.io as pio

    from slimsearch.reports import figures

    hover = figures.hover_texts(report.trials, report.status, report.teacher)
    drawn = {
        "front": figures.front_figure(report.trials, report.status, hover, report.teacher, report.budget_ms,
                                      report.budget_label, report.picks),
        "pairs": figures.pairs_figure(report.trials, report.status, hover, report.teacher),
        "layers": figures.layers_figure(report.matrix, report.front),
        "progress": figures.progress_figure(report.history),
        "timing": figures.timing_figure(report.stages),
    }
    config = {"displaylogo": False, "responsive": True}
    # plotly.js goes in once, in the page head; each figure is a div plus its JSON (plotly's
    # encoder writes `<` as \u003c, so no string in the data can close the script element).
    return {name: pio.to_html(figure, full_html=False, include_plotlyjs=False, config=config,
                              div_id=f"plot-{name}", default_width="100%")
            for name, figure in drawn.items()}


def render(report: ReportData) -> str:
    from plotly.offline import get_plotlyjs

    plots = _figures_html(report)
    esc = html.escape
    counts = report.status.value_counts()
    front_note = ("" if len(report.front) else
                  '<p class="empty">No feasible, fine-tuned trial yet: the front is empty.</p>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>slimsearch · {esc(report.run_name)} · {esc(report.task)}</title>
<style>{parts.CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body>
{parts.header(report.run_name, report.task, report.budget_label, report.budget_ms, report.teacher, counts,
              len(report.front))}
<main>
<section class="cards">
{parts.pick_card(report.picks.get("recommended"), "Recommended", "best validation accuracy under the budget",
                 report.teacher)}
{parts.pick_card(report.picks.get("knee"), "Knee of the front",
                 "where giving up latency stops buying much accuracy", report.teacher)}
</section>
<section><h2>Pareto front</h2>
<p class="lead">Every trial by its measured latency and validation accuracy; marker area grows with
the model's bytes. Trials off the front, over the budget or stopped by the latency-first rule are faded;
hover a point for its knobs.</p>
{front_note}{plots["front"]}</section>
<section><h2>Where the front came from</h2>
<p class="lead">Which proposer chose each trial: the warm start (what a person would try first), Optuna's
sampler over the sensitivity-shaped genome, the predictor-guided inner search, and the budgeted allocation;
and how close the predictors came, judged on trials they had not seen.</p>
{parts.origins(report.origins, report.predictor_errors)}</section>
<section><h2>Objective pairs</h2>{plots["pairs"]}</section>
<section><h2>What each front model changed, per layer</h2>
<p class="lead">Colour: how strongly the layer was compressed (prune ratio; 1 − bits/32; separable on;
1 − rank ratio kept; exit on). Text: the knob's value.</p>
{plots["layers"]}</section>
<section class="grid2">
<div><h2>Search progress</h2>
<p class="lead">Hypervolume of feasible fine-tuned trials, objectives normalised to the teacher
(accuracy loss, latency, size; reference point (1, 1, 1)).</p>{plots["progress"]}</div>
<div><h2>Time per trial</h2>
<p class="lead">Where the seconds went; engine bookkeeping is the trial's duration minus its stages.</p>
{plots["timing"]}</div>
</section>
<section><h2>All trials</h2><p class="lead">Click a column header to sort.</p>
{parts.trials_table(report.trials, report.status)}</section>
{parts.failures(report.trials)}
<section><h2>Measurement conditions</h2>
<p class="lead">Every latency on this page holds under these conditions.</p>
{parts.environment(report.environment)}</section>
</main>
<script>{parts.SORT_JS}</script>
</body></html>
"""


def write_front_page(result, path: Path) -> Path:
    """Write the run's report to `path` (one HTML file, no network needed to open it)."""
    import os

    from slimsearch.errors import ConfigError, os_reason

    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"the report must be written to an HTML file path such as 'report.html', but got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write the report to {str(path)!r}: it is a folder; expected an HTML file path "
                          f"such as {str(path / 'report.html')!r}")
    page = render(build_report(result))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write the report to {str(path)!r}: {os_reason(error)}") from None
    return path

