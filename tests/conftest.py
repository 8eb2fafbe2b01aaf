"""Shared fixtures: tiny but real search settings, and GPU auto-skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# As `import slimsearch` does for a search process (search/threads.py): OpenMP threads that sleep
# rather than spin while they wait, set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_settings(tmp_path) -> dict:
    """A real search on digits, shrunk: few trials, a short fine-tune, fewer timing repeats."""
    return {
        "task": "digits",
        "latency_budget": "0.7x",
        "trials": 4,
        "name": "tiny",
        "runs_dir": str(tmp_path / "runs"),
        "finetune": {"epochs": 1.0},
        "latency": {"warmup": 3, "repeats": 30, "rounds": 3},
    }


def write_toml(path: Path, settings: dict) -> Path:
    """Write settings as a search.toml (flat keys first, then one table per section)."""
    lines = []
    for key, value in settings.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in settings.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def slimsearch_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a subprocess."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "slimsearch.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=kwargs.get("cwd"))


def slimsearch_cli_batch(commands: list[list[str]], *, timeout: float = 600, cwd=None) -> list[dict]:
    """Run several command lines through the CLI's entry point in one subprocess (tests/cli/batch.py).

    For many cheap command lines (bad input refused up front) where starting Python and torch
    per line would cost more than the commands; each result has "code", "stdout" and "stderr".
    """
    import json

    from tests.cli.batch import MARKER

    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "tests.cli.batch"], input=json.dumps(commands), capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd or REPO)
    if done.returncode != 0:
        raise RuntimeError(f"the CLI batch itself failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.rsplit(MARKER, 1)[-1])
