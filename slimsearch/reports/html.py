"""The first HTML page: the front drawn with plotly, self-contained (plotly.js embedded).

Data comes from `reports.data`; this module only draws. Every string from user code (task and
layer names, failure reasons) goes through `html.escape` before it reaches the page.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd


def _front_figure(trials: pd.DataFrame, front: pd.DataFrame, teacher: dict, budget_ms: float | None):
    import plotly.graph_objects as go

    figure = go.Figure()
    complete = trials[trials["state"] == "complete"]
    others = complete[~complete["trial"].isin(front["trial"])]
    figure.add_trace(go.Scatter(
        x=others["latency_ms"], y=others["accuracy"], mode="markers", name="other trials",
        marker={"color": "lightgray", "size": 8}, text=[f"trial {t}" for t in others["trial"]],
        hovertemplate="%{text}<br>%{x:.3f} ms<br>acc %{y:.2%}<extra></extra>"))
    figure.add_trace(go.Scatter(
        x=front["latency_ms"], y=front["accuracy"], mode="markers+lines", name="Pareto front",
        line={"shape": "hv", "dash": "dot"}, marker={"size": 12},
        text=[f"trial {t}, {s / 1024:.1f} KiB" for t, s in zip(front["trial"], front["size_bytes"])],
        hovertemplate="%{text}<br>%{x:.3f} ms<br>acc %{y:.2%}<extra></extra>"))
    if teacher:
        figure.add_trace(go.Scatter(x=[teacher["latency_ms"]], y=[teacher["val_accuracy"]], mode="markers",
                                    name="teacher", marker={"symbol": "star", "size": 16, "color": "black"}))
    if budget_ms:
        figure.add_vline(x=budget_ms, line_dash="dash", line_color="red", annotation_text="budget")
    figure.update_layout(xaxis_title="measured latency (ms)", yaxis_title="validation accuracy",
                         template="plotly_white", height=520)
    return figure


def write_front_page(result, path: Path) -> Path:
    trials, front, teacher = result.trials, result.front, result.teacher
    config = result.config
    budget = config.latency_budget
    budget_ms = budget.limit_ms(teacher["latency_ms"]) if teacher else None
    plot = _front_figure(trials, front, teacher, budget_ms).to_html(full_html=False, include_plotlyjs=True)
    table = front.drop(columns=["candidate"]).to_html(index=False, float_format=lambda v: f"{v:.4g}", escape=True)
    target = config.target
    conditions = (f"{target.runtime} on {target.device}, batch {target.batch_size}, {target.threads} thread(s); "
                  f"budget {budget}")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>slimsearch: {html.escape(result.run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:3px 6px}}</style></head><body>
<h1>slimsearch run {html.escape(result.run_dir.name)}</h1>
<p>Task <b>{html.escape(config.task)}</b>; latency measured with {html.escape(conditions)}.
{len(trials)} trials, {int(trials['feasible'].sum())} feasible, {len(front)} on the front.</p>
{plot}
<h2>Pareto front</h2>
{table}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
