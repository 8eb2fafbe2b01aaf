"""The latency cache: keyed by the deployed graph without its weight values, shared through the run folder."""

import torch

from slimsearch.evaluators.deploy import export_onnx
from slimsearch.evaluators.latency import LatencySettings, Measurement, PairedMeasurement
from slimsearch.evaluators.latency_cache import LatencyCache, architecture_key
from slimsearch.tasks.models import ResidualCNN


def _export(model, path):
    return export_onnx(model.eval(), torch.randn(1, 1, 24, 24), path)


def test_same_graph_with_other_weights_shares_a_key_and_other_shapes_do_not(tmp_path):
    settings = LatencySettings()
    torch.manual_seed(0)
    first = _export(ResidualCNN(in_channels=1, num_classes=10, widths=(16, 32)), tmp_path / "a.onnx")
    torch.manual_seed(1)  # other weights, same architecture
    second = _export(ResidualCNN(in_channels=1, num_classes=10, widths=(16, 32)), tmp_path / "b.onnx")
    narrower = _export(ResidualCNN(in_channels=1, num_classes=10, widths=(8, 32)), tmp_path / "c.onnx")
    assert first.read_bytes() != second.read_bytes()
    assert architecture_key(first, settings) == architecture_key(second, settings)
    assert architecture_key(first, settings) != architecture_key(narrower, settings)
    assert architecture_key(first, settings) != architecture_key(first, LatencySettings(threads=2))


def test_measurements_persist_in_the_run_folder_and_survive_a_torn_line(tmp_path):
    def measurement(ms):
        return Measurement(ms, 0.01, ms, ms, 100, "onnxruntime", "cpu", 1, 1)

    cache = LatencyCache(tmp_path)
    cache.put("abc", PairedMeasurement(measurement(0.1), measurement(0.3)))
    with open(tmp_path / "latency-cache.jsonl", "a") as handle:
        handle.write('{"key": "torn", "student": {')  # a writer killed mid-line
    reopened = LatencyCache(tmp_path)
    assert reopened.get("abc").speedup == 0.3 / 0.1
    assert reopened.get("torn") is None and reopened.get("missing") is None


def test_a_trial_times_its_architecture_once(tiny_settings):
    import slimsearch

    settings = {**tiny_settings, "trials": 2, "finetune": {"epochs": 0.25}, "space": {"families": ["prune", "quant"]}}
    result = slimsearch.search(**settings)
    fine_tuned = [t for t in result.study.trials if t.user_attrs.get("stopped_early") is None]
    assert fine_tuned
    # Timed before fine-tuning; the fine-tuned form deploys to the same graph and is not timed again.
    # (The untrained form may itself be a hit, when a latency probe of the priors timed that graph.)
    assert all(t.user_attrs["latency_cache_hits"] >= 1 for t in fine_tuned)
    assert (result.run_dir / "latency-cache.jsonl").exists()
