"""A tiny but real search through the CLI: run, resume, front --json, export, and the ONNX it wrote."""

import json

import numpy as np
import onnxruntime as ort
import torch

import slimsearch
from slimsearch.tasks import create_task
from tests.conftest import slimsearch_cli, write_toml

FRONT_KEYS = {"trial", "accuracy", "teacher_accuracy", "latency_ms", "teacher_latency_ms", "speedup", "size_bytes",
              "feasible", "candidate", "origin", "macs", "macs_ratio", "params_ratio", "flags"}


def test_search_front_export_and_resume(tiny_settings, tmp_path):
    config = write_toml(tmp_path / "search.toml", tiny_settings)
    run = slimsearch_cli("run", str(config))
    assert run.returncode == 0, run.stderr
    run_dir = tmp_path / "runs" / "tiny"
    for name in ("study.db", "trials.csv", "trials.parquet", "report.html", "run.json"):
        assert (run_dir / name).exists(), name
    assert "Pareto front" in run.stdout

    front = slimsearch_cli("front", str(run_dir), "--json")
    assert front.returncode == 0, front.stderr
    records = json.loads(front.stdout)
    assert records, "a 0.7x budget on digits leaves feasible trials"
    for record in records:
        assert FRONT_KEYS <= record.keys()
        assert record["feasible"] is True
        assert record["latency_ms"] <= 0.7 * record["teacher_latency_ms"]
        assert record["speedup"] > 1.0
        assert record["macs_ratio"] > 0 and record["params_ratio"] > 0 and isinstance(record["flags"], list)
        choices = record["candidate"]["choices"]
        # Every family is on by default, and each front model records its choice for each.
        assert record["candidate"]["version"] == 1
        assert {"prune", "quant", "distill", "separable", "lowrank", "exits"} <= choices.keys()
        assert "criterion" in choices["exits"] and all(isinstance(v, bool) for v in choices["separable"].values())
    # Every trial says which proposer chose it: one warm-start point in a search this short, then
    # the proposers, whose predictions are kept beside what the trial measured.
    trials = slimsearch.load(run_dir).trials
    assert list(trials["origin"])[:1] == ["warm_start"] and "warm_start" not in list(trials["origin"])[1:]
    assert set(trials["origin"][1:]) <= {"allocation", "predictor", "sampler", "long_finetune"}
    predicted = trials[trials["origin"].isin(["allocation", "predictor", "long_finetune"])]
    assert len(predicted) and predicted["predicted_latency_ratio"].notna().all()
    assert all(record["origin"] in {"warm_start", "allocation", "predictor", "sampler", "long_finetune"} for record in records)
    # Beyond the warm start (uniform int8), the proposers explore mixed precision.
    sampled = [json.loads(c)["choices"]["quant"] for c in trials["candidate"].dropna()]
    assert any(len({value.split("-")[0] for value in quant.values()}) >= 2 for quant in sampled)

    # Running the same command again resumes the study instead of starting over.
    again = slimsearch_cli("run", str(config), "--trials", "5")
    assert again.returncode == 0, again.stderr
    assert "Resuming study 'tiny'" in again.stderr and "4 of 5 trials already done" in again.stderr
    trials = json.loads((run_dir / "run.json").read_text())
    assert trials["study_name"] == "tiny"

    # The most accurate front model: the best trained of a 1-epoch search, so a fair test of
    # export's 0.5-point accuracy check (near-chance models flip more predictions under int8).
    # (Early-exit models export as segments instead: tests/test_export.py covers those.)
    single_graph = [r for r in records
                    if all(v == "off" for k, v in r["candidate"]["choices"]["exits"].items() if k != "criterion")]
    best = max(single_graph, key=lambda r: r["accuracy"])
    chosen = best["trial"]
    out = tmp_path / "exported"
    export = slimsearch_cli("export", str(run_dir), "--trial", str(chosen), "-o", str(out))
    assert export.returncode == 0, export.stderr
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "weights.pt", "candidate.json"}
    assert json.loads((out / "candidate.json").read_text()) == best["candidate"]

    # The exported ONNX file (QDQ int8 where the trial quantized), used on its own, scores what the
    # trial reported.
    task = create_task("digits")
    inputs, labels = task.test.tensors
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": inputs.numpy()})[0]
    accuracy = float((np.argmax(logits, 1) == labels.numpy()).mean())
    assert abs(accuracy - best["test_accuracy"]) <= 0.005
    weights = torch.load(out / "weights.pt", weights_only=True)
    assert all(isinstance(t, torch.Tensor) for t in weights.values())


def test_demo_command_searches_reports_and_exports(tmp_path):
    demo = slimsearch_cli("demo", "--trials", "2", "--runs-dir", str(tmp_path))
    assert demo.returncode == 0, demo.stderr
    assert "Pareto front" in demo.stdout and "report: " in demo.stdout
    exported = next(line for line in demo.stdout.splitlines() if line.startswith("exported model"))
    assert exported.endswith(("model.onnx", "exits")) and (tmp_path / "demo" / "report.html").exists()
