"""The front in the terminal: a rich table."""

from __future__ import annotations

import json

import pandas as pd
from rich.table import Table


def _knob_summary(candidate_json: str) -> str:
    choices = json.loads(candidate_json)["choices"]
    parts = []
    ratios = list(choices.get("prune", {}).values())
    if ratios:
        parts.append(f"prune mean {sum(ratios) / len(ratios):.2f} max {max(ratios):.2f}")
    distill = choices.get("distill")
    if distill:
        parts.append(f"T={distill['temperature']:.1f} a={distill['alpha']:.2f}")
    return ", ".join(parts)


def front_table(front: pd.DataFrame, *, teacher: dict, budget: str) -> Table:
    table = Table(title=f"Pareto front ({len(front)} models, latency budget {budget})")
    for column, justify in [("trial", "right"), ("val acc", "right"), ("test acc", "right"), ("latency ms", "right"),
                            ("speed-up", "right"), ("size KiB", "right"), ("knobs", "left")]:
        table.add_column(column, justify=justify)
    if teacher:
        table.add_row("teacher", f"{teacher.get('val_accuracy', float('nan')):.2%}",
                      f"{teacher.get('test_accuracy', float('nan')):.2%}", f"{teacher.get('latency_ms', float('nan')):.3f}",
                      "1.00x", f"{teacher.get('size_bytes', 0) / 1024:.1f}", "-", style="dim")
    for row in front.itertuples():
        table.add_row(str(row.trial), f"{row.accuracy:.2%}",
                      f"{row.test_accuracy:.2%}" if pd.notna(row.test_accuracy) else "-",
                      f"{row.latency_ms:.3f} ± {row.latency_iqr_ms / 2:.3f}", f"{row.speedup:.2f}x",
                      f"{row.size_bytes / 1024:.1f}", _knob_summary(row.candidate))
    return table
