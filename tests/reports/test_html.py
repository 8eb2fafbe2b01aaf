"""The page as a string: self-contained, and every user string escaped, figure data included."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from slimsearch.config import SearchConfig
from slimsearch.reports.data import TRIAL_COLUMNS
from slimsearch.reports.html import write_front_page

HOSTILE = "<script>alert(1)</script>"
TEACHER = {"latency_ms": 2.0, "latency_iqr_ms": 0.1, "val_accuracy": 0.98, "test_accuracy": 0.97,
           "size_bytes": 100_000, "params_count": 25_000, "name": HOSTILE}


def _trial(number, state="complete", accuracy=0.9, latency=1.0, size=50_000, feasible=True, stopped=None,
           reason=None):
    candidate = json.dumps({"version": 1, "choices": {"prune": {HOSTILE: 0.5, "conv2": 0.25},
                                                      "distill": {"temperature": 4.0, "alpha": 0.5}}})
    done = state == "complete"
    row = dict.fromkeys(TRIAL_COLUMNS)
    row.update(trial=number, state=state, accuracy=accuracy if done else None, test_accuracy=accuracy,
               latency_ms=latency if done else None, teacher_latency_ms=2.0, speedup=2.0 / latency,
               size_bytes=size if done else None, feasible=feasible and done, stopped_early=stopped,
               fail_reason=reason, seconds_build=0.1, seconds_latency=0.5, seconds_finetune=3.0,
               seconds_evaluate=0.2, duration_s=4.0, candidate=candidate)
    return row


def _fake_result(tmp_path: Path):
    trials = pd.DataFrame([
        _trial(0, accuracy=0.95, latency=1.2),
        _trial(1, accuracy=0.90, latency=0.8, size=40_000),
        _trial(2, accuracy=0.70, latency=0.5, size=30_000),
        _trial(3, accuracy=0.60, latency=1.1),
        _trial(4, accuracy=0.2, latency=1.9, feasible=False, stopped="latency-first: 1.9 ms is over " + HOSTILE),
        _trial(5, state="fail", reason="RuntimeError: " + HOSTILE),
    ], columns=TRIAL_COLUMNS)
    front = trials.iloc[[2, 1, 0]].reset_index(drop=True)
    config = SearchConfig.from_mapping({"task": "digits", "latency_budget": "0.7x"}, source="test")
    environment = {"machine": HOSTILE, "runtime": "onnxruntime", "device": "cpu", "batch_size": 1, "threads": 2,
                   "versions": {"torch": "2.x"}, "latency": {"warmup": 3}}
    return SimpleNamespace(trials=trials, front=front, teacher=TEACHER, environment=environment, config=config,
                           run_dir=tmp_path / "run")


def test_page_is_self_contained_and_escapes_every_user_string(tmp_path):
    page = write_front_page(_fake_result(tmp_path), tmp_path / "report.html").read_text()
    assert HOSTILE not in page, "a raw <script> from user code reached the page"
    # Nothing is fetched: plotly.js is inline and no element loads from the network.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?https?:", page)
    # Text parts escape with entities; figure data is escaped before plotly, and plotly's JSON
    # encoder writes '<' as \u003c on top, so no '</script>' in data can end the script element.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    figures = re.findall(r"Plotly\.newPlot\((.*?)</script>", page, re.S)
    assert len(figures) == 5
    for data in figures:
        assert "<" not in data, "a raw '<' inside figure JSON could close its script element"
        assert "alert(1)" not in data or "&lt;script&gt;alert(1)" in data.replace("\\u0026", "&")


def test_page_shows_the_decisions(tmp_path):
    page = write_front_page(_fake_result(tmp_path), tmp_path / "report.html").read_text()
    for text in ("Recommended: trial 0", "Knee of the front: trial 1", "All trials", "Failed trials (1)",
                 "Measurement conditions", "0.7x ≤ 1.400 ms"):
        assert text in page, text
    for div in ("plot-front", "plot-pairs", "plot-layers", "plot-progress", "plot-timing"):
        assert f'id="{div}"' in page
