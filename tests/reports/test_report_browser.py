"""The report of a real tiny search, opened in headless Chromium: it draws, sorts, and runs no user code."""

from __future__ import annotations

import pytest

import slimsearch
from tests.conftest import REPO, tiny_settings
from tests.reports.browser import artifacts_dir, open_page, require_chromium
from tests.reports.hostile_task import HOSTILE


@pytest.fixture(scope="module")
def chromium():
    require_chromium()


@pytest.fixture(scope="module")
def tiny_result(chromium, tmp_path_factory):
    # One real 4-trial search for the module: conftest's `tiny_settings`, called for a module tmp dir.
    settings = tiny_settings.__wrapped__(tmp_path_factory.mktemp("tiny"))
    return slimsearch.search(**settings)


def test_report_draws_the_front_with_no_errors(tiny_result, tmp_path_factory):
    report = tiny_result.report()
    with open_page(report.as_uri()) as page:
        assert page.problems == {"console": [], "pageerror": [], "dialog": [], "network": []}
        traces = page.evaluate("""() => document.getElementById('plot-front').data
                                          .map(t => ({uid: t.uid || '', n: (t.x || []).length}))""")
        # The front is drawn one trace per origin (the proposer that chose each model); the teacher
        # and the budget line are traces without a uid.
        front = [t for t in traces if t["uid"].startswith("front")]
        assert sum(t["n"] for t in front) == len(tiny_result.front), traces
        assert {t["uid"].removeprefix("front-") for t in front} == set(tiny_result.front["origin"]) or not len(tiny_result.front)
        plots = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => e.id)")
        assert plots == ["plot-front", "plot-pairs", "plot-layers", "plot-progress", "plot-timing"]

        # Sorting: a click on "latency ms" orders the rows by latency, missing values last.
        page.click("table.trials th:has-text('latency ms')")
        latencies = page.evaluate("""() => Array.from(document.querySelectorAll('#trials tbody tr'))
            .map(r => r.cells[5].getAttribute('data-v')).filter(v => v !== null).map(Number)""")
        assert latencies == sorted(latencies) and len(latencies) == tiny_result.trials["latency_ms"].notna().sum()

        screenshot = artifacts_dir(tmp_path_factory.mktemp("artifacts")) / "report.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"report screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_hostile_layer_name_shows_as_text_and_never_runs(chromium, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    settings = {**tiny_settings.__wrapped__(tmp_path), "task": "tests.reports.hostile_task:hostile",
                "latency_budget": "2x", "name": "hostile", "seed": 1}
    result = slimsearch.search(**settings)
    with open_page(result.report().as_uri()) as page:
        assert page.problems["dialog"] == [], "a name from user code ran as script"
        assert page.problems["pageerror"] == [] and page.problems["console"] == []
        assert HOSTILE in page.evaluate("() => document.body.innerText")
        ticks = page.evaluate("() => Array.from(document.querySelectorAll('#plot-layers .ytick text'))"
                              ".map(t => t.textContent)")
        assert any(HOSTILE in tick for tick in ticks), ticks
        page.screenshot(path=str(artifacts_dir(tmp_path) / "report-hostile.png"), full_page=True)
