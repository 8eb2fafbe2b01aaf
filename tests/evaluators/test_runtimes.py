"""The torch runtimes: deployed forms, torch.compile on the CPU, CUDA graphs on a GPU, and what a
CPU target refuses. GPU tests are marked `gpu` and skip without CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimsearch.config import SpaceConfig
from slimsearch.errors import ConfigError
from slimsearch.evaluators import runtimes
from slimsearch.evaluators.latency import LatencySettings, make_runner, measure_pair
from slimsearch.spaces import Candidate
from slimsearch.tasks.models import ResidualCNN
from slimsearch.techniques import build_student
from slimsearch.techniques.precision import CastModel, execution_dtype

EXAMPLE = torch.randn(1, 1, 24, 24)
QUICK = {"warmup": 2, "repeats": 12, "rounds": 3}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def private_lock_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMSEARCH_LATENCY_LOCK", str(tmp_path / "latency.lock"))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return ResidualCNN(in_channels=1, num_classes=10, widths=(8, 16)).eval()


def student_of(teacher, **choices) -> nn.Module:
    return build_student(Candidate(choices), teacher, EXAMPLE, SpaceConfig())


def test_precision_choice_marks_the_student_and_its_deployed_form_computes_in_it(teacher):
    student = student_of(teacher, precision={"dtype": "bfloat16"})
    assert execution_dtype(student) is torch.bfloat16
    assert all(p.dtype == torch.float32 for p in student.parameters())  # it trains in float32
    deployed = runtimes.deployed_torch_model(student, "cpu")
    assert isinstance(deployed, CastModel)
    assert all(p.dtype == torch.bfloat16 for p in deployed.parameters())
    with torch.inference_mode():
        out, reference = deployed(EXAMPLE), teacher(EXAMPLE)
    assert out.dtype == torch.float32  # the interface stays float32
    difference = (out - reference).abs().max().item()
    assert 0 < difference < 0.1  # rounded (bf16 keeps 8 bits of mantissa), not a different model


def test_float32_choice_leaves_the_student_unmarked(teacher):
    student = student_of(teacher, precision={"dtype": "float32"})
    assert execution_dtype(student) is None
    assert not isinstance(runtimes.deployed_torch_model(student, "cpu"), CastModel)


def test_sixteen_bit_layers_compute_in_half_where_half_kernels_are_fast(teacher):
    student = student_of(teacher, quant={"stem.0": "16-float"})
    stored_only = runtimes.deployed_torch_model(student, "cpu")  # a CPU keeps them stored in fp16, computed in fp32
    computed = runtimes.deployed_torch_model(student, "cpu", half_layers=True)  # as on CUDA
    assert not any(isinstance(m, runtimes.HalfLayer) for m in stored_only.modules())
    halves = [m for m in computed.modules() if isinstance(m, runtimes.HalfLayer)]
    assert len(halves) == 1 and halves[0].layer.weight.dtype == torch.float16
    with torch.inference_mode():
        assert torch.allclose(computed(EXAMPLE), stored_only(EXAMPLE), atol=2e-2)


def test_architecture_key_ignores_weight_values_but_not_shapes_or_precision(teacher):
    settings = LatencySettings(runtime="torch-compile")
    pruned = student_of(teacher, prune={"stages.1.0.conv1": 0.5})
    retrained = student_of(teacher, prune={"stages.1.0.conv1": 0.5})
    with torch.no_grad():
        for parameter in retrained.parameters():
            parameter.add_(1.0)
    key = runtimes.architecture_key(pruned, settings)
    assert key == runtimes.architecture_key(retrained, settings)
    assert key != runtimes.architecture_key(teacher, settings)
    assert key != runtimes.architecture_key(student_of(teacher, prune={"stages.1.0.conv1": 0.5},
                                                       precision={"dtype": "float16"}), settings)
    assert key != runtimes.architecture_key(pruned, LatencySettings(runtime="torch-compile", batch_size=8))


@pytest.mark.parametrize(("runtime", "device"), [("cudagraph", "cpu"), ("onnxruntime-tensorrt", "cpu")])
def test_cuda_only_runtimes_are_refused_on_a_cpu(runtime, device):
    with pytest.raises(ConfigError, match=f"runtime={runtime!r} runs on CUDA GPUs only"):
        LatencySettings(runtime=runtime, device=device)


def test_torch_compile_on_the_cpu_times_the_compiled_model_and_reports_compile_time(teacher):
    """inductor's C++ path: the runner computes what eager does, and compiling is not latency."""
    settings = LatencySettings(runtime="torch-compile", **QUICK)
    student = student_of(teacher, prune={"stages.1.0.conv1": 0.5})
    runner = make_runner(student, EXAMPLE, settings)
    assert runner.prepare_seconds > 0.05  # code generation and a C++ build, not a lookup
    deployed = runtimes.deployed_torch_model(student, "cpu")
    compiled = runtimes.prepare_module(deployed, EXAMPLE, "torch-compile", "cpu")
    with torch.inference_mode():
        assert torch.allclose(compiled(EXAMPLE), deployed(EXAMPLE), atol=1e-4)
    teacher_runner = make_runner(teacher, EXAMPLE, settings)
    pair = measure_pair(runner, teacher_runner, settings)
    assert pair.student.runtime == "torch-compile" and pair.student.samples == QUICK["repeats"]


def test_each_model_compiles_on_its_own_entry_so_dynamo_never_falls_back_to_eager(teacher):
    """With one shared entry point, dynamo recompiles per architecture and past its limit runs the
    model eagerly without a word; every deployed model gets its own code object instead."""
    import torch._dynamo

    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(**{limit: 1}):  # (pytest's monkeypatch cannot restore dynamo's config)
        for ratio in (0.25, 0.5, 0.75):
            deployed = runtimes.deployed_torch_model(student_of(teacher, prune={"stages.1.0.conv1": ratio}), "cpu")
            runtimes.prepare_module(deployed, EXAMPLE, "torch-compile", "cpu")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 3
    assert not torch._dynamo.utils.counters["recompiles"]


@pytest.mark.slow
def test_early_exit_segments_compile_one_by_one_and_keep_the_per_sample_decision(teacher):
    from slimsearch.techniques.exits import confidence

    student = student_of(teacher, exits={"stage1": 0.5, "criterion": "max_prob"})
    deployed = runtimes.deployed_torch_model(student, "cpu")
    eager = runtimes.deployed_torch_model(student, "cpu")
    compiled = runtimes.prepare_module(deployed, EXAMPLE, "torch-compile", "cpu")
    assert all(isinstance(segment, runtimes._Unit) for segment in runtimes.early_exit_part(compiled).segments)
    samples = torch.randn(6, 1, 1, 24, 24)
    with torch.inference_mode():
        for x in samples:
            assert torch.allclose(compiled(x), eager(x), atol=1e-4)
        confidences = [float(confidence(eager.segments[0](x)[1], "max_prob")[0]) for x in samples]
    assert confidences  # the samples exercise the exit decision


# --- on a GPU ------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("runtime", ["cudagraph", "torch-compile"])
def test_graph_runtimes_compute_what_eager_does_on_cuda(teacher, runtime):
    deployed = runtimes.deployed_torch_model(teacher, "cuda")
    x = EXAMPLE.cuda()
    run = runtimes.prepare_module(deployed, x, runtime, "cuda")
    with torch.inference_mode():
        expected = deployed(x).clone()
        assert torch.allclose(run(x).clone(), expected, atol=1e-3)
        other = torch.randn_like(x)
        assert torch.allclose(run(other).clone(), deployed(other), atol=1e-3)  # a new input is copied in


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_replay_beats_eager_at_batch_one_on_a_launch_bound_model(teacher):
    settings = LatencySettings(runtime="cudagraph", device="cuda", warmup=20, repeats=200, rounds=5)
    eager = LatencySettings(runtime="torch", device="cuda", warmup=20, repeats=200, rounds=5)
    graphed = make_runner(teacher, EXAMPLE, settings)
    plain = make_runner(teacher, EXAMPLE, eager)
    pair = measure_pair(graphed, plain, settings)
    assert pair.student.device == "cuda" and graphed.prepare_seconds > 0
    assert pair.speedup > 1.0  # the same model, without per-kernel launches from Python


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("runtime", ["cudagraph", "torch-compile"])
def test_early_exit_model_runs_segment_graphs_on_cuda(teacher, runtime):
    student = student_of(teacher, exits={"stage1": 0.5, "criterion": "max_prob"}, precision={"dtype": "float16"})
    eager = runtimes.deployed_torch_model(student, "cuda")
    run = runtimes.prepare_module(runtimes.deployed_torch_model(student, "cuda"), EXAMPLE.cuda(), runtime, "cuda")
    with torch.inference_mode():
        for x in torch.randn(4, 1, 1, 24, 24, device="cuda"):
            assert torch.allclose(run(x).clone(), eager(x), atol=2e-2)
