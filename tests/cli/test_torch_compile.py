"""`--runtime torch-compile` end to end on a CPU (inductor's C++ path): search, front, export, verify."""

import json

import pytest

from tests.conftest import slimsearch_cli, write_toml


@pytest.mark.slow
def test_torch_compile_search_front_export_and_verify(tiny_settings, tmp_path):
    settings = {**tiny_settings, "trials": 2, "latency_budget": "0.9x", "target": {"runtime": "torch-compile"},
                "space": {"families": ["prune", "quant", "distill"]}}
    run = slimsearch_cli("run", str(write_toml(tmp_path / "search.toml", settings)))
    assert run.returncode == 0, run.stderr
    run_dir = tmp_path / "runs" / "tiny"

    front = slimsearch_cli("front", str(run_dir), "--json")
    assert front.returncode == 0, front.stderr
    records = json.loads(front.stdout)
    assert records, "the warm start's pruned int8 candidate is well under 0.9x the teacher"
    for record in records:
        assert 0 < record["macs_ratio"] < 1 and isinstance(record["flags"], list)

    from slimsearch import load

    trials = load(run_dir).trials
    assert (trials["seconds_compile"].dropna() > 0).all()  # compiling is its own stage, not latency

    best = max(records, key=lambda r: r["accuracy"])
    out = tmp_path / "exported"
    export = slimsearch_cli("export", str(run_dir), "--trial", str(best["trial"]), "-o", str(out))
    assert export.returncode == 0, export.stderr
    verification = json.loads((out / "verification.json").read_text())
    assert verification["speedup"] > 1.0 and verification["pt2_max_logit_difference"] <= 1e-3
    again = slimsearch_cli("export", str(run_dir), "--trial", str(best["trial"]), "-o", str(out), "--verify-only")
    assert again.returncode == 0, again.stderr
