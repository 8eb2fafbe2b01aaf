"""Plotly figures for the report, drawn from frames computed in `reports.data` / `reports.insights`.

Plotly renders a subset of HTML in text, hover labels and tick labels (<b>, <br>, <a href>), so
every string that can come from user code (layer names, failure reasons, the budget as typed)
goes through `esc` before it reaches a figure; plotly turns the entities back into plain text.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from slimsearch.reports.data import knob_lines
from slimsearch.reports.insights import Pick

COLOURS = {
    "front": "#2563eb", "dominated": "#94a3b8", "over budget": "#ef4444", "stopped early": "#f97316",
    "teacher": "#111827", "recommended": "#16a34a", "knee": "#d97706", "budget": "#dc2626",
}
# Front markers by the proposer that chose the model (search/origins.py).
ORIGIN_SYMBOLS = {"warm_start": "square", "sampler": "diamond", "predictor": "circle", "allocation": "triangle-up",
                  "long_finetune": "star", "retry": "hexagon", "queued": "pentagon", "random": "cross"}
STAGE_COLOURS = {"build": "#8b5cf6", "compile": "#ef4444", "latency": "#f59e0b", "finetune": "#3b82f6", "evaluate": "#10b981",
                 "engine": "#cbd5e1"}
STAGE_NAMES = {"build": "build", "compile": "compile", "latency": "latency", "finetune": "fine-tune", "evaluate": "evaluate",
               "engine": "engine bookkeeping"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Liberation Sans', sans-serif"


def esc(text: Any) -> str:
    """Escape a user string for plotly text: `<` and `&` become entities plotly shows literally."""
    return html.escape(str(text), quote=True)


def values(series) -> list:
    """Plain lists (NaN as None) rather than numpy arrays, which plotly would embed as base64
    typed arrays: plain JSON keeps the page's data readable by a test and a human."""
    return [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in series]


def _layout(figure, *, height: int, **extra):
    figure.update_layout(template="plotly_white", height=height, font={"family": FONT, "size": 13},
                         margin={"l": 60, "r": 24, "t": 48, "b": 52}, hoverlabel={"align": "left"},
                         legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0}, **extra)
    return figure


def _accuracy_ticks(*columns) -> str:
    # Whole percents repeat ("10%, 10%, 11%") when every accuracy sits within a few points.
    numbers = pd.concat([pd.Series(c, dtype=float) for c in columns]).dropna()
    return ".1%" if len(numbers) and numbers.max() - numbers.min() < 0.06 else ".0%"


def _pct(value) -> str:
    return f"{value:.2%}" if value is not None and not pd.isna(value) else "–"


def hover_texts(trials: pd.DataFrame, status: pd.Series, teacher: dict[str, Any]) -> pd.Series:
    """One readable, escaped hover label per trial: its figures, its knobs, and why it stopped."""
    teacher_size = teacher.get("size_bytes") or math.nan
    texts = []
    for row, state in zip(trials.itertuples(), status):
        origin = getattr(row, "origin", None)
        lines = [f"<b>trial {int(row.trial)}</b> · {esc(state)}" + (f" · from {esc(origin)}" if isinstance(origin, str) else "")]
        if not pd.isna(row.accuracy):
            lines.append(f"val acc {_pct(row.accuracy)} (test {_pct(row.test_accuracy)})")
        if not pd.isna(row.latency_ms):
            speed = f" · {row.speedup:.2f}× faster" if not pd.isna(row.speedup) else ""
            lines.append(f"latency {row.latency_ms:.3f} ms{speed}")
        if not pd.isna(row.size_bytes):
            lines.append(f"size {row.size_bytes / 1024:.1f} KiB · {teacher_size / row.size_bytes:.1f}× smaller")
        lines += [esc(line) for line in knob_lines(row.candidate, getattr(row, "exit_shares", None))]
        reason = row.stopped_early if isinstance(row.stopped_early, str) else row.fail_reason
        if isinstance(reason, str):
            lines.append(f"<i>{esc(reason[:160])}</i>")
        texts.append("<br>".join(lines))
    return pd.Series(texts, index=trials.index)


def _marker_sizes(size_bytes: pd.Series, teacher: dict[str, Any]) -> list[float]:
    # Area grows with bytes (diameter with its square root), relative to the teacher's bytes.
    reference = float(teacher.get("size_bytes") or size_bytes.max() or 1.0)
    return [8.0 + 18.0 * math.sqrt(max(float(s), 0.0) / reference) if not pd.isna(s) else 8.0 for s in size_bytes]


def front_figure(trials: pd.DataFrame, status: pd.Series, hover: pd.Series, teacher: dict[str, Any],
                 budget_ms: float | None, budget_label: str, chosen: dict[str, Pick | None]):
    """Accuracy against measured latency: every trial, the front in colour, the budget, the teacher."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, symbol, opacity in (("over budget", "x", 0.45), ("stopped early", "x-thin-open", 0.6),
                                  ("dominated", "circle", 0.45)):
        rows = trials[(status == name) & trials["latency_ms"].notna() & trials["accuracy"].notna()]
        figure.add_trace(go.Scatter(
            x=values(rows["latency_ms"]), y=values(rows["accuracy"]), mode="markers", name=name,
            uid=name.replace(" ", "-"), text=values(hover[rows.index]), hovertemplate="%{text}<extra></extra>",
            marker={"size": _marker_sizes(rows["size_bytes"], teacher), "color": COLOURS[name], "opacity": opacity,
                    "symbol": symbol, "line": {"width": 1.5}},
            visible=True if len(rows) else "legendonly"))
    # The front, one trace per origin: which proposer each front model came from, by its marker.
    on_front = trials[(status == "front") & trials["latency_ms"].notna() & trials["accuracy"].notna()]
    origins = list(dict.fromkeys(on_front["origin"].fillna("unknown"))) if len(on_front) else ["front"]
    for origin in origins:
        rows = on_front[on_front["origin"].fillna("unknown") == origin] if len(on_front) else on_front
        figure.add_trace(go.Scatter(
            x=values(rows["latency_ms"]), y=values(rows["accuracy"]), mode="markers",
            name=f"Pareto front · {esc(origin)}" if len(on_front) else "Pareto front",
            uid=f"front-{origin}", legendgroup="front", text=values(hover[rows.index]),
            hovertemplate="%{text}<extra></extra>",
            marker={"size": _marker_sizes(rows["size_bytes"], teacher), "color": COLOURS["front"], "opacity": 1.0,
                    "symbol": ORIGIN_SYMBOLS.get(origin, "circle"), "line": {"width": 1, "color": "white"}}))
    if teacher:
        figure.add_trace(go.Scatter(
            x=[teacher["latency_ms"]], y=[teacher["val_accuracy"]], mode="markers+text", name="teacher",
            text=["teacher"], textposition="middle left", hoverinfo="skip",
            marker={"symbol": "star", "size": 8 + 18, "color": COLOURS["teacher"]}))
    for role, pick in chosen.items():
        if pick is not None:
            figure.add_annotation(x=pick.latency_ms, y=pick.accuracy, text=f"<b>{role}</b> #{pick.trial}",
                                  showarrow=True, arrowhead=2, ax=-50 if role == "knee" else 40, ay=-36,
                                  font={"color": COLOURS[role]}, arrowcolor=COLOURS[role])
    if budget_ms:
        figure.add_vline(x=budget_ms, line={"dash": "dash", "color": COLOURS["budget"], "width": 2},
                         annotation_text=f"budget {esc(budget_label)} = {budget_ms:.3f} ms",
                         annotation_position="top right", annotation_font_color=COLOURS["budget"])
    _layout(figure, height=520, xaxis_title="measured latency (ms, median)", yaxis_title="validation accuracy")
    figure.update_yaxes(tickformat=_accuracy_ticks(trials["accuracy"], [teacher.get("val_accuracy")]))
    return figure


def pairs_figure(trials: pd.DataFrame, status: pd.Series, hover: pd.Series, teacher: dict[str, Any]):
    """The three objective pairs side by side: accuracy–latency, accuracy–size, latency–size."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = [("latency_ms", "accuracy", "latency (ms)", "accuracy"),
             ("size_kib", "accuracy", "size (KiB)", "accuracy"),
             ("size_kib", "latency_ms", "size (KiB)", "latency (ms)")]
    figure = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                           subplot_titles=["accuracy – latency", "accuracy – size", "latency – size"])
    frame = trials.assign(size_kib=trials["size_bytes"].astype(float) / 1024)
    teacher_point = {"latency_ms": teacher.get("latency_ms"), "accuracy": teacher.get("val_accuracy"),
                     "size_kib": (teacher.get("size_bytes") or math.nan) / 1024}
    ticks = _accuracy_ticks(frame.loc[status.isin(["front", "dominated"]), "accuracy"], [teacher.get("val_accuracy")])
    for col, (x, y, x_title, y_title) in enumerate(pairs, start=1):
        for name in ("dominated", "front"):
            rows = frame[(status == name) & frame[x].notna() & frame[y].notna()]
            figure.add_trace(go.Scatter(
                x=values(rows[x]), y=values(rows[y]), mode="markers", name="Pareto front" if name == "front" else "other feasible",
                legendgroup=name, showlegend=col == 1, text=values(hover[rows.index]), hovertemplate="%{text}<extra></extra>",
                marker={"color": COLOURS[name], "size": 10 if name == "front" else 7,
                        "opacity": 1.0 if name == "front" else 0.5}), row=1, col=col)
        if teacher:
            figure.add_trace(go.Scatter(x=[teacher_point[x]], y=[teacher_point[y]], mode="markers", name="teacher",
                                        legendgroup="teacher", showlegend=col == 1, hovertemplate="teacher<extra></extra>",
                                        marker={"symbol": "star", "size": 16, "color": COLOURS["teacher"]}),
                             row=1, col=col)
        figure.update_xaxes(title_text=x_title, row=1, col=col)
        figure.update_yaxes(title_text=y_title, tickformat=ticks if y == "accuracy" else None, row=1, col=col)
    _layout(figure, height=400)
    figure.update_layout(margin={"t": 90}, legend={"y": 1.14})
    return figure


def layers_figure(matrix: pd.DataFrame, front: pd.DataFrame):
    """Layers × front models: colour says how strongly each layer was compressed, the text the knob value."""
    import plotly.graph_objects as go

    front = front.sort_values(["latency_ms", "trial"])
    cells = matrix[matrix["trial"].isin(front["trial"])]
    rows = list(dict.fromkeys(zip(cells["family"], cells["layer"])))
    columns = [int(t) for t in front["trial"]]
    if not rows or not columns:
        figure = go.Figure()
        figure.add_annotation(text="no per-layer choices on the front yet", showarrow=False, x=0.5, y=0.5,
                              xref="paper", yref="paper", font={"size": 15, "color": "#6b7280"})
        figure.update_xaxes(visible=False)
        figure.update_yaxes(visible=False)
        return _layout(figure, height=160)
    strength = pd.DataFrame(math.nan, index=pd.MultiIndex.from_tuples(rows), columns=columns)
    labels = strength.astype(object).fillna("")
    for cell in cells.itertuples():
        strength.loc[(cell.family, cell.layer), cell.trial] = cell.strength if cell.strength is not None else math.nan
        labels.loc[(cell.family, cell.layer), cell.trial] = esc(cell.label)
    y = [f"{esc(family)} · {esc(layer)}" for family, layer in rows]
    x = [f"#{t} · {ms:.3f} ms" for t, ms in zip(columns, front["latency_ms"])]
    figure = go.Figure(go.Heatmap(
        z=[values(row) for row in strength.to_numpy(dtype=float)], x=x, y=y, text=labels.to_numpy().tolist(), texttemplate="%{text}",
        colorscale=[[0, "#f8fafc"], [0.5, "#93c5fd"], [1, "#1e3a8a"]], zmin=0, zmax=1, xgap=2, ygap=2,
        hovertemplate="%{y}<br>trial %{x}<br>choice %{text}<br>strength %{z:.2f}<extra></extra>",
        colorbar={"title": {"text": "compression"}, "tickvals": [0, 0.5, 1], "ticktext": ["none", "", "strong"]}))
    _layout(figure, height=max(260, 90 + 26 * len(rows)), plot_bgcolor="#e5e7eb")
    figure.update_yaxes(autorange="reversed", type="category")
    figure.update_xaxes(type="category", side="top", title_text="front models, fastest first")
    figure.update_layout(margin={"t": 80})
    return figure


def progress_figure(history: pd.DataFrame):
    """Hypervolume and the feasible share after each trial: is the search still finding better models?"""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                           subplot_titles=["hypervolume (normalised to the teacher)", "feasible share"])
    figure.add_trace(go.Scatter(x=values(history["trial"]), y=values(history["hypervolume"]), mode="lines+markers", name="hypervolume",
                                line={"shape": "hv", "color": COLOURS["front"]},
                                hovertemplate="after trial %{x}: HV %{y:.4f}<extra></extra>"), row=1, col=1)
    figure.add_trace(go.Scatter(x=values(history["trial"]), y=values(history["feasible_share"]), mode="lines+markers",
                                name="feasible share", line={"color": COLOURS["recommended"]},
                                hovertemplate="after trial %{x}: %{y:.0%} feasible<extra></extra>"), row=2, col=1)
    figure.update_yaxes(rangemode="tozero", row=1, col=1)
    figure.update_yaxes(range=[0, 1.05], tickformat=".0%", row=2, col=1)
    figure.update_xaxes(title_text="trial", dtick=max(1, len(history) // 20), row=2, col=1)
    return _layout(figure, height=420, showlegend=False)


def timing_figure(stages: pd.DataFrame):
    """Seconds per trial, stacked by stage, so it shows where search time goes."""
    import plotly.graph_objects as go

    figure = go.Figure()
    labels = [f"{t}" + (" ✗" if s == "fail" else "") for t, s in zip(stages["trial"], stages["state"])]
    for stage, colour in STAGE_COLOURS.items():
        figure.add_trace(go.Bar(x=labels, y=values(stages[stage]), name=STAGE_NAMES[stage], marker_color=colour,
                                hovertemplate=f"trial %{{x}} · {STAGE_NAMES[stage]} %{{y:.2f}} s<extra></extra>"))
    _layout(figure, height=360, barmode="stack", xaxis_title="trial (✗ failed)", yaxis_title="seconds")
    figure.update_xaxes(type="category")
    return figure
