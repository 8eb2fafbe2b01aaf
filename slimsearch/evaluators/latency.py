"""Honest latency: measured on the target runtime, never estimated, never overlapping.

A runner is a zero-argument function doing one inference, so measuring does not care
which runtime is behind it. Student and teacher are timed in the same window, interleaved,
so slow drift of a noisy machine changes both and the speed-up ratio stays true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimsearch.errors import ConfigError
from slimsearch.evaluators.deploy import export_onnx, onnx_session

RUNTIMES = ("onnxruntime", "onnxruntime-tensorrt", "torch", "torch-compile", "cudagraph")
ORT_RUNTIMES = ("onnxruntime", "onnxruntime-tensorrt")
CUDA_ONLY_RUNTIMES = ("onnxruntime-tensorrt", "cudagraph")
DEVICES = ("cpu", "cuda")
LOCK_ENV = "SLIMSEARCH_LATENCY_LOCK"


@dataclass(frozen=True)
class LatencySettings:
    """Where and how latency is measured: the user's runtime, device, batch size, threads."""

    runtime: str = "onnxruntime"
    device: str = "cpu"
    batch_size: int = 1
    threads: int = 1
    warmup: int = 10
    repeats: int = 100
    rounds: int = 5

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"latency runtime must be one of {', '.join(map(repr, RUNTIMES))}, but got runtime={self.runtime!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"latency device must be one of 'cpu', 'cuda', but got device={self.device!r}")
        if self.device == "cpu" and self.runtime in CUDA_ONLY_RUNTIMES:
            raise ConfigError(f"latency runtime={self.runtime!r} runs on CUDA GPUs only, but got device='cpu'")
        for name, minimum in (("batch_size", 1), ("threads", 1), ("warmup", 0), ("repeats", 1), ("rounds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"latency {name} must be an integer >= {minimum}, but got {name}={value!r}")


@dataclass(frozen=True)
class Measurement:
    """Summary of per-call latencies in milliseconds, with the conditions they were taken under."""

    median_ms: float
    iqr_ms: float
    p90_ms: float
    mean_ms: float
    samples: int
    runtime: str
    device: str
    batch_size: int
    threads: int
    # "median" of repeated calls on one input; "mean" over samples for data-dependent models
    # (early exits), where each sample's own time is the median of its repeats.
    statistic: str = "median"

    @property
    def value_ms(self) -> float:
        """The figure the search optimises: the median, or for data-dependent latency the mean."""
        return self.mean_ms if self.statistic == "mean" else self.median_ms

    def to_dict(self) -> dict[str, float | int | str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PairedMeasurement:
    """Student and teacher measured in one window; their ratio is what the search trusts."""

    student: Measurement
    teacher: Measurement

    @property
    def speedup(self) -> float:
        return self.teacher.value_ms / self.student.value_ms


class Runner:
    """One inference on the target runtime, as a zero-argument call; `prepare_seconds` is what
    compiling, capturing or building the runtime's session for it took (not latency)."""

    def __init__(self, call: Callable[[], object], prepare_seconds: float = 0.0) -> None:
        self._call = call
        self.prepare_seconds = prepare_seconds

    def __call__(self) -> object:
        return self._call()


def check_target_available(settings: LatencySettings) -> None:
    """Refuse a target this machine cannot run, before a search trains or times anything."""
    if settings.device != "cuda":
        if settings.runtime == "torch-compile":
            from slimsearch.evaluators.runtimes import check_compiler

            check_compiler()
        return
    if settings.runtime not in ORT_RUNTIMES and not torch.cuda.is_available():
        raise ConfigError(f"target.device='cuda' with runtime={settings.runtime!r}, but torch sees no CUDA GPU on this "
                          f"machine (torch.cuda.is_available() is False); allowed here: device='cpu'")
    if settings.runtime in ORT_RUNTIMES:
        import onnxruntime as ort

        available = ort.get_available_providers()
        needed = "TensorrtExecutionProvider" if settings.runtime == "onnxruntime-tensorrt" else "CUDAExecutionProvider"
        if needed not in available:
            allowed = ("device='cpu'" if settings.runtime == "onnxruntime"
                       else "runtime='onnxruntime' with device='cpu' or 'cuda'")
            raise ConfigError(f"target.device='cuda' with runtime={settings.runtime!r}, but ONNX Runtime offers only "
                              f"{', '.join(available)} here; allowed here: {allowed} (or install onnxruntime-gpu, "
                              f"`pip install slimsearch[gpu]`, on a machine with a CUDA GPU)")


def make_runner(model: nn.Module | None, example_input: torch.Tensor, settings: LatencySettings, *,
                onnx_path: Path | None = None) -> Runner:
    """A `Runner` doing one inference of `model` at `settings.batch_size` on the target runtime.

    For the ONNX Runtime runtimes, `onnx_path` is the already exported model (the one that ships)
    and `model` is only exported when it is None. For the torch runtimes, the runner owns its
    deployed form of `model` (evaluators/runtimes.py: folded, cast, compiled or captured), so
    the caller's model keeps its mode and device and later training cannot change what is
    measured. Callers must ignore the return value (the ORT runner passes its outputs through,
    which tests use to check the batch size).
    """
    x = _random_input(example_input, settings.batch_size)
    started = time.perf_counter()
    if settings.runtime in ORT_RUNTIMES:
        if onnx_path is None:
            # ORT reads the file while building the session, so the temp dir can go right after.
            with tempfile.TemporaryDirectory(prefix="slimsearch-latency-") as tmp:
                session = onnx_session(export_onnx(model, x, Path(tmp) / "model.onnx"), threads=settings.threads,
                                       device=settings.device, runtime=settings.runtime)
        else:
            session = onnx_session(onnx_path, threads=settings.threads, device=settings.device, runtime=settings.runtime)
        feed = {session.get_inputs()[0].name: x.numpy()}
        if settings.runtime == "onnxruntime-tensorrt":
            session.run(None, feed)  # TensorRT builds its engine on the first run: preparation, not latency
        return Runner(lambda: session.run(None, feed), time.perf_counter() - started)

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"latency device='cuda' with runtime={settings.runtime!r}, but torch.cuda.is_available() is False")
    from slimsearch.evaluators.runtimes import prepare

    # inductor's C++ takes its thread count when it compiles; on a GPU, compiling and capturing run
    # kernels, which must not land in another process's measurement.
    with _torch_threads(settings.threads), gpu_work(settings.device):
        run, seconds = prepare(model, x, settings.runtime, settings.device)
    return Runner(run, seconds)


def _random_input(example_input: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A fixed random batch shaped like the example; non-float inputs (token ids, say)
    reuse rows of the example so values stay valid."""
    generator = torch.Generator().manual_seed(0)
    example = example_input.detach().cpu()
    if example.is_floating_point():
        return torch.randn((batch_size, *example.shape[1:]), generator=generator, dtype=example.dtype)
    rows = torch.randint(0, example.shape[0], (batch_size,), generator=generator)
    return example[rows].contiguous()


_process_lock = threading.RLock()
_lock_fd: list[int] = []  # the open lock files while this process holds the machine-wide lock
_holder: list[int] = []  # the thread holding it
_shared_fds: dict[str, int | str] = {}  # this process's lock files for GPU work, kept open between steps


def _lock_paths() -> tuple[str, str]:
    """The lock file, and the gate in front of it that lets a waiting measurement go first."""
    path = os.environ.get(LOCK_ENV) or f"/tmp/slimsearch-latency-{os.getuid()}.lock"
    return path, path + ".gate"


@contextlib.contextmanager
def measurement_lock() -> Iterator[None]:
    """Hold the machine-wide latency lock: one measurement at a time across threads and processes,
    and no GPU work of any process (training, evaluation, see `gpu_work`) while it is held.

    Re-entrant within a thread: the file lock is taken on the outermost entry only, because
    flock on a second fd in the same process would wait for itself. The gate is held while
    waiting for the lock, so trainers that keep taking it shared cannot starve a measurement.
    """
    import fcntl  # POSIX only, like the rest of the measurement machinery

    with _process_lock:
        outermost = not _lock_fd
        if outermost:
            fds = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in reversed(_lock_paths())]
            try:
                for fd in fds:  # gate first, then the lock itself
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
            _lock_fd.extend(fds)
            _holder.append(threading.get_ident())
        try:
            yield
        finally:
            if outermost:
                _holder.clear()
                while _lock_fd:
                    os.close(_lock_fd.pop())  # closing the fds releases the flocks


@contextlib.contextmanager
def gpu_work(device: str | torch.device) -> Iterator[None]:
    """Mark a stretch of GPU work (a training step, an evaluation batch): any number of processes
    may do GPU work at once, but none while a latency measurement holds `measurement_lock`, so
    `--jobs N` trials sharing one GPU never run kernels under another's timing. The work is
    finished (synchronised) before the lock is released: kernels run after their launch returns.
    A no-op off CUDA, and inside this thread's own measurement."""
    if torch.device(device).type != "cuda" or (_holder and _holder[0] == threading.get_ident()):
        yield
        return
    with shared_lock():
        yield
        torch.cuda.synchronize()


@contextlib.contextmanager
def shared_lock() -> Iterator[None]:
    """The machine-wide latency lock taken shared: beside other shared holders, never beside a
    measurement. Behind the gate, so a measurement waiting for the lock goes first."""
    import fcntl

    path, gate_path = _lock_paths()
    if _shared_fds.get("path") != path:  # first use, or the lock file was moved (tests)
        for key in ("lock", "gate"):
            if key in _shared_fds:
                os.close(_shared_fds.pop(key))
        _shared_fds.update(lock=os.open(path, os.O_RDWR | os.O_CREAT, 0o600),
                           gate=os.open(gate_path, os.O_RDWR | os.O_CREAT, 0o600), path=path)
    lock, gate = _shared_fds["lock"], _shared_fds["gate"]
    fcntl.flock(gate, fcntl.LOCK_EX)  # waits behind a measurement that is waiting for the lock
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)
    finally:
        fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def measure(runner: Callable[[], None], settings: LatencySettings) -> Measurement:
    """Latency of one runner: warm-up, then `settings.repeats` timed calls, under the lock."""
    (times,) = _measure_interleaved([runner], settings)
    return _summarise(times, settings)


def measure_pair(student_runner: Callable[[], None], teacher_runner: Callable[[], None],
                 settings: LatencySettings) -> PairedMeasurement:
    """Student and teacher timed in alternating blocks within one locked window."""
    teacher_times, student_times = _measure_interleaved([teacher_runner, student_runner], settings)
    return PairedMeasurement(student=_summarise(student_times, settings), teacher=_summarise(teacher_times, settings))


def measure_pair_per_sample(student: Callable[[int], None], teacher: Callable[[int], None], samples: int,
                            settings: LatencySettings) -> PairedMeasurement:
    """Latency that depends on the input (early exits): `student(i)` and `teacher(i)` run sample i
    alone. Every round times each sample once per model, alternating which model goes first; a
    sample's time is the median over rounds, and the summary (mean, p90) is over samples."""
    runners = [teacher, student]
    per_sample: list[list[list[float]]] = [[[] for _ in range(samples)] for _ in runners]
    with _timing_window(runners, settings, warmup=lambda run: [run(i % samples) for i in range(settings.warmup)]) as time_calls:
        for round_index in range(settings.rounds):
            shift = round_index % len(runners)
            for r in [*range(shift, len(runners)), *range(shift)]:
                for i in range(samples):
                    per_sample[r][i].extend(time_calls(lambda: runners[r](i), 1))
    teacher_ms, student_ms = ([_percentile(sorted(times), 50) for times in model_times] for model_times in per_sample)
    return PairedMeasurement(student=_summarise(student_ms, settings, statistic="mean"),
                             teacher=_summarise(teacher_ms, settings, statistic="mean"))


def _measure_interleaved(runners: list[Callable[[], None]], settings: LatencySettings) -> list[list[float]]:
    """Per-call milliseconds for each runner; each round times a block of calls of every
    runner, and which runner goes first rotates from round to round."""
    times: list[list[float]] = [[] for _ in runners]
    with _timing_window(runners, settings, warmup=lambda run: [run() for _ in range(settings.warmup)]) as time_calls:
        for round_index in range(settings.rounds):
            calls = settings.repeats // settings.rounds + (round_index < settings.repeats % settings.rounds)
            shift = round_index % len(runners)
            for i in [*range(shift, len(runners)), *range(shift)]:
                times[i].extend(time_calls(runners[i], calls))
    return times


@contextlib.contextmanager
def _timing_window(runners: list[Callable], settings: LatencySettings, *, warmup: Callable[[Callable], object]):
    """The machine-wide lock, the thread count, warm-up of every runner, and no garbage
    collection while timing; yields the function that times `calls` calls of a runner."""
    cuda_events = settings.device == "cuda" and settings.runtime not in ORT_RUNTIMES
    threads = _torch_threads(settings.threads) if settings.runtime not in ORT_RUNTIMES else contextlib.nullcontext()
    with measurement_lock(), threads:
        for runner in runners:
            warmup(runner)
        if cuda_events:
            torch.cuda.synchronize()
        gc.collect()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a collection mid-call is noise that belongs to neither model
        try:
            yield _time_calls_cuda if cuda_events else _time_calls_host
        finally:
            if gc_was_enabled:
                gc.enable()


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Eager torch runs on the process-wide intra-op pool, so its size is set for the
    measurement only (ORT sessions carry their own thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _time_calls_host(runner: Callable[[], None], calls: int) -> list[float]:
    # ORT's run() returns only when outputs are on the host, even with CUDA, so a host clock is exact.
    out = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        runner()
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def _time_calls_cuda(runner: Callable[[], None], calls: int) -> list[float]:
    # Kernels run asynchronously, so the host clock would time the launches; events time the GPU.
    # Synchronising after each call makes every call a fresh request, as a server would see it.
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(calls)]
    for start, end in pairs:
        start.record()
        runner()
        end.record()
        torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in pairs]


def _summarise(times_ms: list[float], settings: LatencySettings, *, statistic: str = "median") -> Measurement:
    ordered = sorted(times_ms)
    per_sample = statistic == "mean"  # one sample at a time, whatever the target's batch size
    return Measurement(
        median_ms=_percentile(ordered, 50), iqr_ms=max(0.0, _percentile(ordered, 75) - _percentile(ordered, 25)),
        p90_ms=_percentile(ordered, 90), mean_ms=sum(ordered) / len(ordered), samples=len(ordered),
        runtime=settings.runtime, device=settings.device, batch_size=1 if per_sample else settings.batch_size,
        threads=settings.threads, statistic=statistic,
    )


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted data."""
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
