"""HTML pieces of the report page: header, summary cards, the sortable trials table, environment.

Each function returns an HTML fragment with every user string escaped; `reports.html` joins them.
"""

from __future__ import annotations

import math
from html import escape as esc
from typing import Any

import pandas as pd

from slimsearch.evaluators.macs import FLAG_NOTES
from slimsearch.reports.data import knob_lines
from slimsearch.search.environment import int8_kernels_note

CSS = """
:root{--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--card:#fff;--front:#2563eb;--ok:#16a34a;
--knee:#d97706;--bad:#dc2626}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'Liberation Sans',sans-serif}
header{background:linear-gradient(135deg,#1e3a8a,#2563eb);color:#fff;padding:28px 40px 24px}
header h1{margin:0 0 4px;font-size:26px;font-weight:650}
header .sub{opacity:.85;margin:0 0 18px}
header .facts{display:flex;flex-wrap:wrap;gap:10px}
header .fact{background:rgba(255,255,255,.12);border-radius:8px;padding:8px 14px;min-width:120px}
header .fact b{display:block;font-size:18px}
header .fact span{font-size:12px;opacity:.85;text-transform:uppercase;letter-spacing:.04em}
main{max-width:1320px;margin:0 auto;padding:24px 32px 48px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:18px 22px;margin:0 0 20px}
section h2{margin:0 0 4px;font-size:19px}
.lead{color:var(--muted);margin:0 0 10px;font-size:14px}
.cards{display:grid;grid-template-columns:1fr 1fr;gap:20px;background:none;border:none;padding:0}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:24px}
.card{background:var(--card);border:1px solid var(--line);border-left:6px solid var(--ok);border-radius:12px;padding:16px 20px}
.card.knee{border-left-color:var(--knee)}
.card h3{margin:0;font-size:17px}.card .why{color:var(--muted);font-size:13px;margin:0 0 12px}
.card .nums{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:14px;margin-bottom:10px}
.card .num b{display:block;font-size:22px}.card .num span{font-size:12px;color:var(--muted)}
.card ul{margin:4px 0 0;padding-left:18px;font-size:13px;color:#374151}
.good{color:var(--ok)}.worse{color:var(--bad)}
.empty{color:var(--muted);font-style:italic}
table.trials{border-collapse:collapse;width:100%;font-size:13px}
table.trials th{position:sticky;top:0;background:#f1f5f9;cursor:pointer;user-select:none;text-align:right;
padding:6px 8px;border-bottom:2px solid var(--line);white-space:nowrap}
table.trials th:hover{background:#e2e8f0}
table.trials th[aria-sort=ascending]::after{content:" ▲"}table.trials th[aria-sort=descending]::after{content:" ▼"}
table.trials td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
table.trials td.text,table.trials th.text{text-align:left;white-space:normal}
table.trials tr:hover td{background:#f8fafc}
.scroll{max-height:560px;overflow:auto;border:1px solid var(--line);border-radius:8px}
.pill{display:inline-block;white-space:nowrap;border-radius:999px;padding:1px 9px;font-size:12px;font-weight:600}
.pill.front{background:#dbeafe;color:#1e40af}.pill.dominated{background:#f1f5f9;color:#475569}
.pill.over-budget{background:#fee2e2;color:#991b1b}.pill.stopped-early{background:#ffedd5;color:#9a3412}
.pill.failed{background:#fecaca;color:#7f1d1d}.pill.running{background:#fef9c3;color:#854d0e}
table.trials td.knobs{font-size:12px;color:#374151;white-space:nowrap}
table.trials td.reason{font-size:12px;color:#7f1d1d;min-width:260px}
dl.env{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0;font-size:14px}
dl.env dt{color:var(--muted)}dl.env dd{margin:0}
ol.failures li{margin:0 0 8px}ol.failures pre{white-space:pre-wrap;margin:2px 0 0;font-size:12px;
background:#fef2f2;border-radius:6px;padding:6px 10px;color:#7f1d1d}
@media (max-width:900px){.cards,.grid2{grid-template-columns:1fr}}
"""

# Plain table sorting: numbers by value (cells carry data-v), text otherwise; missing values last.
SORT_JS = """
document.querySelectorAll('table.trials').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) { var v = row.cells[column].getAttribute('data-v'); return v === null ? '' : v; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === '' || y === '') { return x === y ? 0 : (x === '' ? 1 : -1); }
        var nx = Number(x), ny = Number(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def fmt(value, spec: str, missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return missing
    return format(value, spec)


def _fact(value: str, label: str) -> str:
    return f'<div class="fact"><b>{value}</b><span>{label}</span></div>'


def header(run_name: str, task: str, budget: str, budget_ms: float | None, teacher: dict[str, Any],
           counts: pd.Series, front_size: int) -> str:
    limit = f" ≤ {budget_ms:.3f} ms" if budget_ms else ""
    facts = [_fact(f"{esc(budget)}{limit}", "latency budget")]
    if teacher:
        facts += [
            _fact(f"{fmt(teacher.get('val_accuracy'), '.2%')}", "teacher val acc"),
            _fact(f"{fmt(teacher.get('test_accuracy'), '.2%')}", "teacher test acc"),
            _fact(f"{fmt(teacher.get('latency_ms'), '.3f')} ms ± {fmt(teacher.get('latency_iqr_ms'), '.3f')}",
                  "teacher latency (median ± IQR)"),
            _fact(f"{fmt((teacher.get('size_bytes') or math.nan) / 1024, ',.1f')} KiB",
                  f"teacher size · {fmt(teacher.get('params_count'), ',')} params"),
        ]
    teacher_name = f", teacher <b>{esc(str(teacher['name']))}</b>" if teacher.get("name") else ""
    total = int(counts.sum())
    feasible = int(counts.get("front", 0) + counts.get("dominated", 0))
    facts += [_fact(f"{total}", "trials"), _fact(f"{feasible}", "feasible, fine-tuned"),
              _fact(f"{int(counts.get('stopped early', 0))} / {int(counts.get('failed', 0))}",
                    "stopped early / failed"),
              _fact(f"{front_size}", "on the front")]
    return (f'<header><h1>slimsearch · {esc(run_name)}</h1>'
            f'<p class="sub">Compression search on task <b>{esc(task)}</b>{teacher_name}</p>'
            f'<div class="facts">{"".join(facts)}</div></header>')


def _num(value: str, label: str, css: str = "") -> str:
    return f'<div class="num"><b class="{css}">{value}</b><span>{label}</span></div>'


def pick_card(pick, title: str, why: str, teacher: dict[str, Any]) -> str:
    css = "card knee" if title.lower().startswith("knee") else "card"
    if pick is None:
        reason = ("none yet: it needs three or more points on the latency–accuracy front, one of them above "
                  "the straight line from the fastest to the most accurate" if "knee" in css
                  else "none yet: no feasible, fine-tuned trial")
        return f'<div class="{css}"><h3>{esc(title)}</h3><p class="why">{esc(why)}</p><p class="empty">{reason}</p></div>'
    change = pick.accuracy_change * 100
    nums = [
        _num(f"{pick.accuracy:.2%}", f"val acc (test {fmt(pick.test_accuracy, '.2%')})"),
        _num(f"{change:+.2f} pp", "accuracy vs teacher", "good" if change >= 0 else "worse"),
        _num(f"{pick.speedup:.2f}×", f"faster · {pick.latency_ms:.3f} ms", "good"),
        _num(f"{pick.size_ratio:.1f}×", f"smaller · {pick.size_bytes / 1024:,.1f} KiB "
                                        f"(−{1 - 1 / pick.size_ratio:.0%})", "good"),
    ]
    knobs = "".join(f"<li>{esc(line)}</li>" for line in pick.knobs)
    return (f'<div class="{css}"><h3>{esc(title)}: trial {pick.trial}</h3><p class="why">{esc(why)}</p>'
            f'<div class="nums">{"".join(nums)}</div><ul>{knobs}</ul></div>')


_COLUMNS = [  # (header, column, format): the outcome first, then knobs and note, then the details
    ("trial", "trial", "d"), ("val acc", "accuracy", ".2%"), ("test acc", "test_accuracy", ".2%"),
    ("latency ms", "latency_ms", ".3f"), ("speed-up", "speedup", ".2f"), ("size KiB", "size_kib", ",.1f"),
    ("MACs ×", "macs_ratio", ".2f"),
]
_DETAILS = [
    ("IQR ms", "latency_iqr_ms", ".3f"), ("params", "params_count", ",.0f"), ("params ×", "params_ratio", ".2f"),
    ("MACs", "macs", ",.0f"), ("build s", "seconds_build", ".2f"), ("compile s", "seconds_compile", ".2f"),
    ("latency s", "seconds_latency", ".2f"), ("fine-tune s", "seconds_finetune", ".2f"),
    ("evaluate s", "seconds_evaluate", ".2f"), ("total s", "duration_s", ".2f"),
]

def _cell(value, spec: str) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    data = "" if missing else f' data-v="{float(value):.10g}"'
    return f"<td{data}>{fmt(None if missing else value, spec)}</td>"


def trials_table(trials: pd.DataFrame, status: pd.Series) -> str:
    frame = trials.assign(size_kib=trials["size_bytes"].astype(float) / 1024)
    head = "".join(f"<th>{name}</th>" for name, _, _ in _COLUMNS[:1])
    head += '<th class="text">status</th><th class="text">origin</th>'
    head += "".join(f"<th>{name}</th>" for name, _, _ in _COLUMNS[1:])
    head += '<th class="text">knobs</th><th class="text">note</th>'
    head += "".join(f"<th>{name}</th>" for name, _, _ in _DETAILS)
    rows = []
    for (_, row), state in zip(frame.iterrows(), status):
        cells = [_cell(row[column], spec) for _, column, spec in _COLUMNS]
        pill = f'<td class="text" data-v="{esc(state)}"><span class="pill {esc(state).replace(" ", "-")}">{esc(state)}</span></td>'
        knobs = "<br>".join(esc(line) for line in knob_lines(row["candidate"], row.get("exit_shares")))
        reason = row["stopped_early"] if isinstance(row["stopped_early"], str) else row["fail_reason"]
        notes = [reason] if isinstance(reason, str) else []
        if isinstance(row.get("flags"), str) and row["flags"]:
            notes += [FLAG_NOTES.get(flag, flag) for flag in row["flags"].split(",")]
        note = esc("; ".join(notes))
        details = "".join(_cell(row[column], spec) for _, column, spec in _DETAILS)
        origin = esc(str(row.get("origin") or ""))
        rows.append(f"<tr>{cells[0]}{pill}<td class=\"text\" data-v=\"{origin}\">{origin}</td>{''.join(cells[1:])}"
                    f"<td class=\"text knobs\">{knobs}</td>"
                    f'<td class="text reason" data-v="{note}">{note}</td>{details}</tr>')
    return (f'<div class="scroll"><table class="trials" id="trials"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def failures(trials: pd.DataFrame) -> str:
    failed = trials[trials["state"] == "fail"]
    if failed.empty:
        return ""
    items = "".join(f"<li>trial {int(row.trial)}<pre>{esc(str(row.fail_reason or 'no reason recorded'))}</pre></li>"
                    for row in failed.itertuples())
    return (f'<section><h2>Failed trials ({len(failed)})</h2><p class="lead">Recorded with their reasons; '
            f'the search went on without them.</p><ol class="failures">{items}</ol></section>')


def environment(env: dict[str, Any]) -> str:
    if not env:
        return '<p class="empty">This run recorded no environment.</p>'
    latency = env.get("latency") or {}
    versions = env.get("versions") or {}
    rows = [
        ("machine", env.get("machine")), ("platform", env.get("platform")),
        ("CPU", f"{env.get('cpu')} ({env.get('cpu_count')} logical cores{int8_kernels_note(env)})"),
        ("GPU", env.get("gpu") or "none used"),
        ("runtime", f"{env.get('runtime')} on {env.get('device')}"), ("batch size", env.get("batch_size")),
        ("threads", env.get("threads")), ("training on", env.get("training_device") or "cpu"),
        ("timing protocol", ", ".join(f"{key} {value}" for key, value in latency.items())),
        ("Python", env.get("python")),
        ("versions", ", ".join(f"{name} {version or '–'}" for name, version in versions.items())),
    ]
    return '<dl class="env">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in rows) + "</dl>"


def origins(table: pd.DataFrame, errors: dict[str, Any]) -> str:
    if table.empty:
        return '<p class="empty">No trial yet.</p>'
    rows = "".join(f"<tr><td class=\"text\">{esc(str(row.origin))}</td><td>{row.trials}</td>"
                   f"<td>{row.fine_tuned_feasible}</td><td>{row.on_front}</td></tr>" for row in table.itertuples())
    latency = errors.get("latency_mape")
    accuracy = errors.get("accuracy_spearman")
    latency_text = (f"median error {latency:.1%} over {errors['latency_samples']} trials"
                    if latency is not None and not math.isnan(latency) else "no predicted trial measured yet")
    accuracy_text = (f"rank correlation {accuracy:.2f} over {errors['accuracy_samples']} fine-tuned trials"
                     if accuracy is not None and not math.isnan(accuracy) else "too few fine-tuned predicted trials")
    return (f'<table class="trials origins"><thead><tr><th class="text">origin</th><th>trials</th>'
            f'<th>fine-tuned within budget</th><th>on the front</th></tr></thead><tbody>{rows}</tbody></table>'
            f'<dl class="env"><dt>latency predictor</dt><dd>{esc(latency_text)}</dd>'
            f'<dt>accuracy predictor</dt><dd>{esc(accuracy_text)}</dd></dl>')
