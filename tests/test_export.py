"""Export writes every artifact of a trial and verifies it; a corrupted artifact fails loudly."""

import json
import shutil

import pytest
import torch

import slimsearch
from slimsearch.errors import ExportError
from slimsearch.exporter import ARTIFACTS, verify_export
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
        slimsearch.load(copy).export(trial=trial, out=tmp_path / "broken" / "model")
    # Nothing half-written is left: no folder, no staging folder beside it.
    assert not (tmp_path / "broken").exists()


def _set_reported_test_accuracy(run_dir, trial: int, value: float) -> None:
    """In a copied run folder: point its run.json at its own study, then change one stored figure."""
    import sqlite3

    info = json.loads((run_dir / "run.json").read_text())
    info["storage"] = f"sqlite:///{(run_dir / 'study.db').resolve()}"
    (run_dir / "run.json").write_text(json.dumps(info))
    with sqlite3.connect(run_dir / "study.db") as db:
        db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'test_accuracy' AND trial_id = "
                   "(SELECT trial_id FROM trials WHERE number = ?)", (json.dumps(value), trial))


def test_an_export_that_fails_verification_leaves_no_folder_and_keeps_an_earlier_one(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run.run_dir, copy)
    trial = int(run.front["trial"].iloc[0])
    _set_reported_test_accuracy(copy, trial, run.study.trials[trial].user_attrs["test_accuracy"])
    earlier = slimsearch.load(copy).export(trial=trial, out=tmp_path / "model")
    before = {path.name: path.read_bytes() for path in earlier.out_dir.iterdir() if path.is_file()}
    _set_reported_test_accuracy(copy, trial, run.study.trials[trial].user_attrs["test_accuracy"] - 0.2)
    for out in (tmp_path / "fresh", tmp_path / "model"):
        with pytest.raises(ExportError, match=f"differs from trial {trial}'s reported .* allowed for \\d+ test samples"):
            slimsearch.load(copy).export(trial=trial, out=out)
    assert not (tmp_path / "fresh").exists()
    assert {path.name: path.read_bytes() for path in earlier.out_dir.iterdir() if path.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["copy", "model"]  # no staging folder left


def test_accuracy_and_agreement_gates_scale_with_the_test_split():
    from slimsearch.exporter import TOLERANCES, _check_accuracy, allowed_changes

    # An early-exit model whose runner changed 2 of 360 test predictions (82.50% against 83.06%).
    checks = {"onnx_test_accuracy": 297 / 360, "reported_test_accuracy": 299 / 360}
    _check_accuracy(checks, 3, 360, "rounded")
    assert checks["accuracy_points_allowed"] > 100 * 2 / 360
    for kind, share in TOLERANCES["changed_predictions"].items():
        small, large = allowed_changes(360, share) / 360, allowed_changes(100_000, share) / 100_000
        assert small > large > share, kind  # more samples: a bound closer to the share itself
    # The same 0.56-point gap on a million float predictions is 5,600 changed samples: not rounding.
    with pytest.raises(ExportError, match=r"by 0.56 points \(> 0.5\d allowed for 1000000 test samples\)"):
        _check_accuracy({"onnx_test_accuracy": 0.8250, "reported_test_accuracy": 0.8306}, 3, 1_000_000, "float")


def test_quantized_trials_are_scored_through_the_deployed_int8_form(run, tmp_path):
    trials = [t for t in run.study.trials if t.state.name == "COMPLETE" and "weights_artifact" in t.user_attrs]
    quantized = [t for t in trials if any(not str(v).startswith("32") for v in t.user_attrs["candidate"]["choices"]
                                          .get("quant", {}).values())]
    assert quantized, "the run has no fine-tuned quantized trial"
    for trial in quantized:  # the fake-quant torch model's figures are kept beside the deployed ones
        assert set(trial.user_attrs["torch_accuracy"]) == {"val", "test"}
    chosen = quantized[0]
    exported = run.export(trial=chosen.number, out=tmp_path / "int8")
    # The front's test accuracy is the shipped file's own: export re-measures exactly that figure.
    assert exported.verification["onnx_test_accuracy"] == chosen.user_attrs["test_accuracy"]
    row = run.trials.set_index("trial").loc[chosen.number]
    assert row["torch_test_accuracy"] == chosen.user_attrs["torch_accuracy"]["test"]
    card = (tmp_path / "int8" / "MODEL_CARD.md").read_text()
    assert "the torch model as fine-tuned" in card and "torchscript ONNX exporter" in card
    # Whether the CPU has VNNI decides how int8 kernels multiply (and how fast): the card says.
    int8_kernels = run.environment.get("cpu_int8")
    assert int8_kernels is None or f"int8 dot product: {int8_kernels}" in card


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

    # Warm start queues every exit first (then one exit alone, then the teacher): trial 0's exits are all live.
    run = slimsearch.search(task="digits", latency_budget="1.5x", trials=4, name="exits", runs_dir=str(tmp_path / "runs"),
                            finetune={"epochs": 1.0}, latency={"warmup": 3, "repeats": 30, "rounds": 3, "exit_samples": 60},
                            space={"families": ["exits", "distill"]})
    exits_choice = run.study.trials[0].user_attrs["candidate"]["choices"]["exits"]
    assert [value for key, value in exits_choice.items() if key != "criterion"] == [0.9, 0.9]
    assert set(run.study.trials[0].user_attrs["exit_shares"]) == {"stage1", "stage2", "final"}
    exported = run.export(trial=0, out=tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"exits", "weights.pt", "candidate.json", "MODEL_CARD.md", "verification.json"} <= names
    assert not {"model.onnx", "model.pt2"} & names
    check = exported.verification
    assert check["argmax_agreement"] >= 0.95 and check["latency_statistic"] == "mean"
    # The trial scored the model as it ships (the runner, sample by sample): export finds the same figure.
    assert check["onnx_test_accuracy"] == run.study.trials[0].user_attrs["test_accuracy"]
    assert "torch_accuracy" in run.study.trials[0].user_attrs
    assert abs(sum(check["exit_shares_test"].values()) - 1) < 1e-9
    # The runner runs on its own, as a user would run it: numpy and onnxruntime only.
    inputs = create_task("digits").test.tensors[0][:5].numpy()
    np.save(tmp_path / "inputs.npy", inputs)
    shipped = subprocess.run([sys.executable, str(tmp_path / "model" / "exits" / "runner.py"),
                              str(tmp_path / "model" / "exits"), str(tmp_path / "inputs.npy")],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert shipped.returncode == 0, shipped.stderr
    lines = [json.loads(line) for line in shipped.stdout.splitlines()]
    assert len(lines) == 5 and all(line["exit"] in {"stage1", "stage2", "final"} for line in lines)
    assert "exits/" in (tmp_path / "model" / "MODEL_CARD.md").read_text()
