"""A search beside another CPU job slows in proportion, not by an order of magnitude.

Torch's OpenMP threads used to spin while waiting for each other; with every core in torch's pool
and one core held by another job, a 2-second fine-tune took 45-80 s (search/threads.py).
"""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, write_toml


def test_import_sets_a_passive_wait_policy_before_torch_loads():
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    probe = ("import os, slimsearch, torch; from slimsearch.search.threads import size_threads; "
             "print(os.environ['OMP_WAIT_POLICY'], slimsearch.OPENMP_PASSIVE, size_threads() >= 1)")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert shown.stdout.split() == ["PASSIVE", "True", "True"], shown.stderr
    # Torch loaded first: OpenMP already chose its policy, so the pool is sized to the free cores instead.
    late = subprocess.run([sys.executable, "-c", "import torch, slimsearch; print(slimsearch.OPENMP_PASSIVE)"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert late.stdout.split() == ["False"], late.stderr


def _search_seconds(settings: dict, folder) -> float:
    config = write_toml(folder / "search.toml", settings)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "slimsearch.cli", "run", str(config), "--quiet"], capture_output=True,
                          text=True, timeout=1800, cwd=folder)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


@pytest.mark.slow
def test_a_search_beside_a_busy_core_takes_less_than_three_times_as_long(tiny_settings, tmp_path):
    settings = {**tiny_settings, "trials": 4, "finetune": {"epochs": 2.0}}
    (tmp_path / "alone").mkdir()
    (tmp_path / "loaded").mkdir()
    alone = _search_seconds({**settings, "runs_dir": str(tmp_path / "alone" / "runs")}, tmp_path / "alone")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one single-threaded CPU job
    try:
        loaded = _search_seconds({**settings, "runs_dir": str(tmp_path / "loaded" / "runs")}, tmp_path / "loaded")
    finally:
        busy.kill()
        busy.wait()
    print(f"search alone {alone:.1f} s, beside a busy core {loaded:.1f} s ({loaded / alone:.2f}x)")
    assert loaded < 3 * alone
