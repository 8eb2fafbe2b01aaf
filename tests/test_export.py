"""Export writes every artifact of a trial and verifies it; a corrupted artifact fails loudly."""

import json
import shutil

import pytest
import torch

import slimsearch
from slimsearch.errors import ExportError
from slimsearch.export import ARTIFACTS, verify_export
from tests.conftest import slimsearch_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    # Single-graph families: the early-exit export (segments and runner) has its own test below.
    return slimsearch.search(task="digits", latency_budget="0.7x", trials=4, name="export", runs_dir=str(runs),
                             finetune={"epochs": 1.0}, latency={"warmup": 3, "repeats": 30, "rounds": 3},
                             space={"families": ["prune", "quant", "distill"]})


def test_recommended_model_exports_in_every_format_and_verifies(run, tmp_path):
    exported = run.export(out=tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} >= set(ARTIFACTS) | {"verification.json"}
    recommended = run.front.sort_values(["accuracy", "latency_ms"], ascending=[False, True]).iloc[0]
    assert exported.trial == int(recommended["trial"])
    check = exported.verification
    # torch.export reproduces the fine-tuned model exactly; ONNX Runtime's int8 kernels round
    # differently from fake-quant, so a quantized ONNX file is held to its predictions.
    assert check["pt2_max_logit_difference"] <= 1e-3
    assert check["argmax_agreement"] >= 0.95
    assert abs(check["onnx_test_accuracy"] - recommended["test_accuracy"]) <= 0.005
    assert check["speedup"] > 1.0

    program = torch.export.load(str(tmp_path / "model" / "model.pt2")).module()
    assert program(torch.randn(3, 1, 24, 24)).shape == (3, 10)
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["trial"] == exported.trial and card["knobs"]["version"] == 1
    assert card["conditions"]["runtime"] == "onnxruntime" and card["conditions"]["batch_size"] == 1
    assert "Model card" in (tmp_path / "model" / "MODEL_CARD.md").read_text()


def test_best_under_picks_the_most_accurate_model_under_the_limit(run, tmp_path):
    front = run.front
    limit = float(front["latency_ms"].max())
    exported = run.export(best_under=f"{limit}ms", out=tmp_path / "fast")
    assert run.front.set_index("trial").loc[exported.trial, "latency_ms"] <= limit
    with pytest.raises(ExportError, match="no front model is under 0.0001ms"):
        run.export(best_under="0.0001ms", out=tmp_path / "none")


def test_corrupted_onnx_artifact_fails_verification_with_one_clear_line(run, tmp_path):
    exported = run.export(out=tmp_path / "model")
    onnx_file = exported.files["model.onnx"]
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    with pytest.raises(ExportError, match="model.onnx .* does not load or run in ONNX Runtime"):
        verify_export(run, exported.out_dir, trial=exported.trial)
    cli = slimsearch_cli("export", str(run.run_dir), "--trial", str(exported.trial), "-o", str(exported.out_dir),
                         "--verify-only")
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert cli.stderr.strip().startswith("error: model.onnx") and len(cli.stderr.strip().splitlines()) == 1


def test_corrupted_stored_weights_fail_export(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run.run_dir, copy)
    trial = int(run.front["trial"].iloc[0])
    artifact_id = run.study.trials[trial].user_attrs["weights_artifact"]
    stored = copy / "artifacts" / artifact_id
    stored.write_bytes(stored.read_bytes()[:100])
    with pytest.raises(ExportError, match="weights.pt .* does not load into the trial's model"):
        slimsearch.load(copy).export(trial=trial, out=tmp_path / "broken")


def test_trial_that_was_never_fine_tuned_is_refused(run, tmp_path):
    with pytest.raises(ExportError, match="trial 999 does not exist"):
        run.export(trial=999, out=tmp_path / "x")


def test_knee_is_exported_or_refused_with_a_reason(run, tmp_path):
    from slimsearch.reports.insights import knee_trial

    knee = knee_trial(run.front)
    if knee is None:
        with pytest.raises(ExportError, match="has no knee"):
            run.export(knee=True, out=tmp_path / "knee")
    else:
        assert run.export(knee=True, out=tmp_path / "knee").trial == knee


def test_early_exit_model_exports_as_segments_with_a_runner_that_ships(tmp_path):
    import subprocess
    import sys

    import numpy as np

    from slimsearch.tasks import create_task

    # Warm start queues one exit on first (then the teacher's neighbourhood): trial 0 has a live exit.
    run = slimsearch.search(task="digits", latency_budget="1.5x", trials=4, name="exits", runs_dir=str(tmp_path / "runs"),
                            finetune={"epochs": 1.0}, latency={"warmup": 3, "repeats": 30, "rounds": 3, "exit_samples": 60},
                            space={"families": ["exits", "distill"]})
    exits_choice = run.study.trials[0].user_attrs["candidate"]["choices"]["exits"]
    assert [value for key, value in exits_choice.items() if key != "criterion"].count("off") == 1
    assert set(run.study.trials[0].user_attrs["exit_shares"]) == {"stage1", "final"}
    exported = run.export(trial=0, out=tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"exits", "weights.pt", "candidate.json", "MODEL_CARD.md", "verification.json"} <= names
    assert not {"model.onnx", "model.pt2"} & names
    check = exported.verification
    assert check["argmax_agreement"] >= 0.95 and check["latency_statistic"] == "mean"
    assert abs(sum(check["exit_shares_test"].values()) - 1) < 1e-9
    # The runner runs on its own, as a user would run it: numpy and onnxruntime only.
    inputs = create_task("digits").test.tensors[0][:5].numpy()
    np.save(tmp_path / "inputs.npy", inputs)
    shipped = subprocess.run([sys.executable, str(tmp_path / "model" / "exits" / "runner.py"),
                              str(tmp_path / "model" / "exits"), str(tmp_path / "inputs.npy")],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert shipped.returncode == 0, shipped.stderr
    lines = [json.loads(line) for line in shipped.stdout.splitlines()]
    assert len(lines) == 5 and all(line["exit"] in {"stage1", "final"} for line in lines)
    assert "exits/" in (tmp_path / "model" / "MODEL_CARD.md").read_text()
