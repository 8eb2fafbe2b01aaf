"""The front in the terminal: a rich table."""

from __future__ import annotations

import json

import pandas as pd
from rich.table import Table


def knob_summary(candidate_json: str) -> str:
    """A one-line reading of a candidate: how much was pruned, at which bit widths, how distilled."""
    choices = json.loads(candidate_json)["choices"]
    parts = []
    ratios = list(choices.get("prune", {}).values())
    if ratios:
        parts.append(f"prune avg {sum(ratios) / len(ratios):.2f} max {max(ratios):.2f}")
    quant = choices.get("quant")
    if quant:
        from slimsearch.spaces.quant import decode_choice

        widths = sorted({decode_choice(value)[0] for value in quant.values()})
        parts.append("bits " + "/".join(map(str, widths)))
    separable = [on for on in choices.get("separable", {}).values() if on is True]
    if separable:
        parts.append(f"separable {len(separable)}")
    lowrank = [ratio for ratio in choices.get("lowrank", {}).values() if isinstance(ratio, (int, float)) and ratio < 1]
    if lowrank:
        parts.append(f"lowrank {len(lowrank)}")
    exits = {stage: t for stage, t in choices.get("exits", {}).items() if stage != "criterion" and t != "off"}
    if exits:
        parts.append("exit " + ",".join(f"{stage}@{t:g}" for stage, t in exits.items()))
    precision = choices.get("precision", {}).get("dtype")
    if precision and precision != "float32":
        parts.append(precision)
    distill = choices.get("distill")
    if distill:
        parts.append(f"T {distill['temperature']:.1f} α {distill['alpha']:.2f}")
    return "; ".join(parts)


def _macs_cell(row) -> str:
    """The MACs ratio, marked when MACs fell but latency did not (evaluators/macs.py)."""
    ratio = getattr(row, "macs_ratio", None)
    if ratio is None or pd.isna(ratio):
        return "-"
    return f"{ratio:.2f}" + (" !" if getattr(row, "flags", "") else "")


def front_table(front: pd.DataFrame, *, teacher: dict, budget: str) -> Table:
    table = Table(title=f"Pareto front: {len(front)} models under the {budget} latency budget")
    if "flags" in front and front["flags"].fillna("").astype(bool).any():
        from slimsearch.evaluators.macs import FLAG_MACS_NOT_LATENCY, FLAG_NOTES

        table.caption = f"MACs × is MACs over the teacher's; ! {FLAG_NOTES[FLAG_MACS_NOT_LATENCY]}"
    for column in ("trial", "val acc", "test acc", "latency ms", "IQR ms", "speed-up", "size KiB", "MACs ×"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    table.add_column("origin", no_wrap=True)  # the proposer that chose the model (search/origins.py)
    # The knobs wrap inside their column, so the figures beside them always show in full.
    table.add_column("knobs", overflow="fold", ratio=1)
    if teacher:
        table.add_row("teacher", f"{teacher['val_accuracy']:.2%}", f"{teacher['test_accuracy']:.2%}",
                      f"{teacher['latency_ms']:.3f}", f"{teacher['latency_iqr_ms']:.3f}", "1.00x",
                      f"{teacher['size_bytes'] / 1024:.1f}", "1.00", "-", style="dim")
    for row in front.itertuples():
        table.add_row(str(row.trial), f"{row.accuracy:.2%}",
                      f"{row.test_accuracy:.2%}" if pd.notna(row.test_accuracy) else "-",
                      f"{row.latency_ms:.3f}", f"{row.latency_iqr_ms:.3f}", f"{row.speedup:.2f}x",
                      f"{row.size_bytes / 1024:.1f}", _macs_cell(row), str(getattr(row, "origin", "") or ""), knob_summary(row.candidate))
    return table


def space_table(record: dict) -> Table:
    """The knobs of a search space per family, and every layer a family leaves out with its reason
    (`search.capability.space_record`)."""
    families = record["families"]
    offered = sum(len(f["knobs"]) for f in families.values())
    left_out = sum(len(f["left_out"]) for f in families.values())
    table = Table(title=f"Search space of {record['task']}: {offered} knobs ({record['parameters']} searched values at "
                        f"granularity {record['granularity']}), {left_out} layers left out", show_lines=False)
    table.add_column("family", no_wrap=True)
    table.add_column("layer", overflow="fold")
    table.add_column("stage", no_wrap=True)
    table.add_column("values, or why it is left out", overflow="fold", ratio=1)
    for family, entry in families.items():
        for knob in entry["knobs"]:
            narrowed = f" (narrowed: {knob['narrowed']})" if knob.get("narrowed") else ""
            table.add_row(family, knob["target"], knob["stage"] or "-", knob["values"] + narrowed)
        for row in entry["left_out"]:
            table.add_row(family, row["target"], "-", f"left out: {row['reason']}", style="yellow")
    return table
