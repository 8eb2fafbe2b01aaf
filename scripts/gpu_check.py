"""The GPU figures the README quotes, measured side by side on one GPU (run by scripts/gpu-check.sh).

Prints, for torchvision:resnet18 on 32x32 digits:
1. the teacher at batch 1: a plain CUDA-graph replay timed here by hand, against slimsearch's
   `torch-compile` and `cudagraph` runtimes (each within 1.3x of the plain replay?);
2. a 50%-pruned student (Torch-Pruning, uniform) against the teacher on the `cudagraph` runtime
   at batch 1 and 256 (>= 1.3x faster?), and the teacher in float16 / bfloat16 at batch 256;
3. one fine-tune epoch on the GPU, on 2 CPU threads (timed over half an epoch) and on all CPU
   cores (GPU <= 1/5 of 2 threads, and faster than all cores?).
Latency is the median of CUDA-event timings, teacher and student interleaved in one window
(evaluators/latency.py); the check's own replay is timed the same way. Writes $OUT/gpu-micro.json
when OUT is set.

GPU_CHECK_DRY=1 runs every step on the CPU, eager and tiny, to catch a broken script before a
GPU's minutes are spent on it (its figures mean nothing).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time

import torch

DRY = os.environ.get("GPU_CHECK_DRY") == "1"
DEVICE = "cpu" if DRY else "cuda"
BATCHES = (1, 8) if DRY else (1, 256)
EPOCH = 0.02 if DRY else 1.0


def runtime(name: str) -> str:
    return "torch" if DRY else name


def plain_replay_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int = 300) -> float:
    """A CUDA graph captured and replayed with nothing of slimsearch in between: the reference."""
    if DRY:
        with torch.inference_mode():
            started = time.perf_counter()
            model(x)
            return (time.perf_counter() - started) * 1e3
    model = copy.deepcopy(model).eval().cuda()
    x = x.cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(stream):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
    for _ in range(20):
        graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def epoch_seconds(model: torch.nn.Module, data, device: str, threads: int | None = None, share: float = 1.0) -> float:
    """Seconds for one fine-tune epoch, timed over `share` of one (the 2-thread CPU epoch takes
    most of a minute, half of one says as much) and scaled to a whole epoch."""
    from slimsearch.evaluators.train import fit

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        fit(copy.deepcopy(model), data, epochs=0.05, lr=1e-3, device=device, autocast=True)  # warm-up: kernels, allocator
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fit(copy.deepcopy(model), data, epochs=EPOCH * share, lr=1e-3, device=device, autocast=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / share
    finally:
        torch.set_num_threads(previous)


def main() -> int:
    from slimsearch.config import SpaceConfig
    from slimsearch.evaluators.latency import LatencySettings, make_runner, measure, measure_pair
    from slimsearch.spaces import Candidate, Space
    from slimsearch.tasks import create_task
    from slimsearch.techniques import build_student

    assert DRY or torch.cuda.is_available(), "gpu_check.py needs a CUDA GPU (GPU_CHECK_DRY=1: a dry run on the CPU)"
    started = time.time()
    task = create_task("torchvision:resnet18")
    teacher, example = task.teacher.eval(), task.example_input
    figures: dict = {"gpu": "dry run" if DRY else torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "cpu_cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                     "teacher_ready_s": round(time.time() - started, 1)}
    timing = {"warmup": 1, "repeats": 3, "rounds": 1} if DRY else {"warmup": 20, "repeats": 200, "rounds": 5}

    # 1. The teacher at batch 1: the runtimes against a plain replay.
    plain = plain_replay_ms(teacher, example)
    figures["teacher_b1_plain_replay_ms"] = plain
    for name in ("cudagraph", "torch-compile"):
        settings = LatencySettings(runtime=runtime(name), device=DEVICE, batch_size=1, **timing)
        runner = make_runner(teacher, example, settings)
        figures[f"teacher_b1_{name}_ms"] = measure(runner, settings).median_ms
        figures[f"teacher_b1_{name}_prepare_s"] = round(runner.prepare_seconds, 2)
        figures[f"teacher_b1_{name}_vs_plain"] = figures[f"teacher_b1_{name}_ms"] / plain
    eager = LatencySettings(runtime="torch", device=DEVICE, batch_size=1, **timing)
    figures["teacher_b1_eager_ms"] = measure(make_runner(teacher, example, eager), eager).median_ms

    # 2. Pruned 50% (every prunable group), and half precision, against the teacher in one window each.
    space = Space.discover(teacher, example, SpaceConfig(families=("prune",)))
    pruned = build_student(Candidate({"prune": {knob.target: 0.5 for knob in space.knobs}}), teacher, example)
    for batch, label in zip(BATCHES, ("b1", "b256")):
        settings = LatencySettings(runtime=runtime("cudagraph"), device=DEVICE, batch_size=batch, **timing)
        pair = measure_pair(make_runner(pruned, example, settings), make_runner(teacher, example, settings), settings)
        figures[f"pruned50_{label}_cudagraph_speedup"] = pair.speedup
        figures[f"pruned50_{label}_cudagraph_ms"] = pair.student.median_ms
        figures[f"teacher_{label}_cudagraph_ms"] = pair.teacher.median_ms
    settings = LatencySettings(runtime=runtime("cudagraph"), device=DEVICE, batch_size=BATCHES[1], **timing)
    for dtype in ("float16", "bfloat16"):
        half = build_student(Candidate({"precision": {"dtype": dtype}}), teacher, example)
        pair = measure_pair(make_runner(half, example, settings), make_runner(teacher, example, settings), settings)
        figures[f"teacher_{dtype}_b256_cudagraph_speedup"] = pair.speedup

    # 3. One fine-tune epoch where the GPU is, against the CPU.
    figures["epoch_gpu_s"] = epoch_seconds(teacher, task.train, DEVICE)
    figures["epoch_cpu_2_threads_s"] = epoch_seconds(teacher, task.train, "cpu", threads=2, share=0.5)
    figures["epoch_cpu_all_cores_s"] = epoch_seconds(teacher, task.train, "cpu", threads=os.cpu_count())
    figures["seconds"] = round(time.time() - started, 1)

    checks = {
        "teacher b1 torch-compile within 1.3x of plain replay": figures["teacher_b1_torch-compile_vs_plain"] <= 1.3,
        "teacher b1 cudagraph within 1.3x of plain replay": figures["teacher_b1_cudagraph_vs_plain"] <= 1.3,
        "pruned 50% >= 1.3x faster (cudagraph, batch 1)": figures["pruned50_b1_cudagraph_speedup"] >= 1.3,
        "pruned 50% >= 1.3x faster (cudagraph, batch 256)": figures["pruned50_b256_cudagraph_speedup"] >= 1.3,
        "GPU epoch <= 1/5 of 2 CPU threads": figures["epoch_gpu_s"] * 5 <= figures["epoch_cpu_2_threads_s"],
        "GPU epoch < all CPU cores": figures["epoch_gpu_s"] < figures["epoch_cpu_all_cores_s"],
    }
    figures["checks"] = checks
    width = max(map(len, figures))
    for key, value in figures.items():
        if key != "checks":
            print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu-micro.json"), "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
