"""Headless Chromium for the report tests: Debian's /usr/bin/chromium driven by playwright.

Playwright never downloads a browser here (no `playwright install`): it launches the system
binary that scripts/install-chromium.sh puts in place. Without it the browser tests skip,
except under CI (env CI set), where a missing browser is a failure, not a silent pass.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No GPU, no sandbox (CI runs as root in a container) and nothing that phones home.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_chromium():
    """Skip (or fail under CI) when the browser or playwright is missing."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing; run `bash scripts/install-chromium.sh` (as root) to install Debian's chromium"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing; `pip install -e '.[test]'`"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser test under CI: {problem}")
        pytest.skip(problem)


@contextmanager
def open_page(url: str):
    """A fresh browser profile and one page at `url`, with its console errors, page errors,
    dialogs and non-file requests collected on `page.problems`."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="slimsearch-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=ARGS, headless=True,
                viewport={"width": 1400, "height": 900})
            try:
                page = context.new_page()
                problems = {"console": [], "pageerror": [], "dialog": [], "network": []}
                page.on("console", lambda m: problems["console"].append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda error: problems["pageerror"].append(str(error)))
                page.on("dialog", lambda d: (problems["dialog"].append(d.message), d.dismiss()))
                page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:"))
                        else problems["network"].append(r.url))
                page.problems = problems
                page.goto(url)
                page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 5", timeout=30_000)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def artifacts_dir(fallback: Path) -> Path:
    """Where screenshots go: $SLIMSEARCH_ARTIFACTS when set, else the test's tmp dir."""
    folder = Path(os.environ.get("SLIMSEARCH_ARTIFACTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
