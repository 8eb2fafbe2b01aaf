"""Latency measured in a process of its own, which never trains.

Timing ONNX Runtime inside the process that has just fine-tuned a model is not honest: after
torch training the same int8 model measured up to 40% slower there than in a fresh process on
this 2-core machine (float models about 10%), and the effect lasted for seconds. A trial
therefore hands its exported file to this long-lived worker, which keeps the teacher's session
open and times student and teacher in one window under the machine-wide lock, as `measure_pair`
always does.

The worker is a plain `python -m slimsearch.evaluators.latency_worker` subprocess speaking one
JSON line per request on stdin/stdout, rather than a multiprocessing child: spawning one of
those re-imports the user's `__main__`, which breaks scripts that call `slimsearch.search()`
without an `if __name__ == "__main__"` guard.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from slimsearch.evaluators.latency import ORT_RUNTIMES, LatencySettings, Measurement, PairedMeasurement


class IsolatedMeasurer:
    """Times ONNX files against the teacher's in a separate process."""

    def __init__(self, teacher_onnx: Path, example_input: torch.Tensor, settings: LatencySettings, *,
                 samples: torch.Tensor | None = None):
        """`samples`: real inputs, timed one at a time for models whose latency depends on the
        input (early exits); needed only for `measure_exits`."""
        if settings.runtime not in ORT_RUNTIMES:
            raise ValueError(f"IsolatedMeasurer times ONNX files, but got runtime={settings.runtime!r}")
        # What building the runtime's session for the last student took (a TensorRT engine: seconds).
        self.last_prepare_seconds = 0.0
        self.teacher_onnx = Path(teacher_onnx)
        example_path = Path(teacher_onnx).with_name("example_input.pt")
        torch.save(example_input.detach().cpu(), example_path)
        self._setup = {"teacher": str(teacher_onnx), "example": str(example_path),
                       "settings": dataclasses.asdict(settings)}
        if samples is not None:
            samples_path = Path(teacher_onnx).with_name("latency_samples.pt")
            torch.save(samples.detach().cpu().contiguous(), samples_path)
            self._setup["samples"] = str(samples_path)
        self._process: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-m", "slimsearch.evaluators.latency_worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._exchange(self._setup)

    def _ask(self, request: dict) -> dict:
        if self._process is None:  # the last exchange was cut short
            self._start()
        return self._exchange(request)

    def _exchange(self, request: dict) -> dict:
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        except BaseException:
            # Interrupted mid-exchange (a trial's time limit, Ctrl-C): its reply would be read as
            # the answer to the next request, so this worker is dropped and the next ask starts one.
            self._discard()
            raise
        if not line:  # it died (a candidate crashed the runtime?): this trial fails, the next starts another
            code = self._process.poll()
            self._discard()
            raise RuntimeError(f"the latency worker stopped (exit code {code})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"latency measurement failed: {reply['error']}")
        self.last_prepare_seconds = float(reply.get("prepare_s", 0.0))
        return reply

    def measure_pair(self, student_onnx: Path) -> PairedMeasurement:
        reply = self._ask({"student": str(student_onnx)})
        return PairedMeasurement(student=Measurement(**reply["student"]), teacher=Measurement(**reply["teacher"]))

    def measure_exits(self, folder: Path, thresholds: list[float] | None = None,
                      samples: int | None = None) -> tuple[PairedMeasurement, dict[str, float]]:
        """An exported early-exit model (evaluators/exit_deploy.py) against the teacher, sample by
        sample (the first `samples` of them; None: all); also the share of samples leaving at each exit."""
        reply = self._ask({"exits": str(folder), "thresholds": thresholds, "samples": samples})
        paired = PairedMeasurement(student=Measurement(**reply["student"]), teacher=Measurement(**reply["teacher"]))
        return paired, reply["exit_shares"]

    def measure_teacher(self) -> Measurement:
        return Measurement(**self._ask({"teacher_only": True})["teacher"])

    def _discard(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()  # also frees the machine-wide measurement lock it may hold
            process.wait()

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.stdin.close()  # end of input: the worker exits
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()


def _serve() -> None:
    from slimsearch.evaluators import latency

    torch.set_num_threads(1)  # this process only feeds ONNX Runtime; it must not compete for cores
    # Ctrl-C in a terminal reaches the whole process group; the search decides what stops, and it
    # ends this worker by closing its input (or kills it mid-measurement), never with a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup = json.loads(sys.stdin.readline())
    settings = LatencySettings(**setup["settings"])
    example = torch.load(setup["example"], weights_only=True)
    teacher = latency.make_runner(None, example, settings, onnx_path=Path(setup["teacher"]))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:  # ends when the trial process closes our stdin or dies
        request = json.loads(line)
        try:
            if request.get("teacher_only"):
                reply = {"teacher": latency.measure(teacher, settings).to_dict()}
            elif "exits" in request:
                reply = _measure_exits(request, setup, settings)
            else:
                student = latency.make_runner(None, example, settings, onnx_path=Path(request["student"]))
                paired = latency.measure_pair(student, teacher, settings)
                reply = {"student": paired.student.to_dict(), "teacher": paired.teacher.to_dict(),
                         "prepare_s": student.prepare_seconds}
        except Exception as error:  # reported to the trial, which records it as the failure reason
            reply = {"error": f"{type(error).__name__}: {error}"}
        try:
            print(json.dumps(reply), flush=True)
        except BrokenPipeError:  # the trial process died while we measured (SIGKILL): nobody to tell
            return


def _measure_exits(request: dict, setup: dict, settings: LatencySettings) -> dict:
    from slimsearch.evaluators import latency
    from slimsearch.evaluators.deploy import onnx_session
    from slimsearch.evaluators.exit_runner import EarlyExitRunner

    if "samples" not in setup:
        raise ValueError("early-exit latency needs real samples, and none were given to the measurer")
    samples = torch.load(setup["samples"], weights_only=True).numpy()[:request.get("samples")]
    make_session = lambda path: onnx_session(path, threads=settings.threads, device=settings.device,  # noqa: E731
                                             runtime=settings.runtime)
    started = time.perf_counter()
    runner = EarlyExitRunner(request["exits"], thresholds=request.get("thresholds"), make_session=make_session)
    prepare_seconds = time.perf_counter() - started
    teacher = make_session(Path(setup["teacher"]))
    teacher_input = teacher.get_inputs()[0].name
    rows = [samples[i:i + 1] for i in range(len(samples))]
    paired = latency.measure_pair_per_sample(lambda i: runner.run(rows[i]), lambda i: teacher.run(None, {teacher_input: rows[i]}),
                                             len(rows), settings)
    _, exits = runner.predict(samples)
    shares = {name: float((exits == index).mean()) for index, name in enumerate(runner.exit_names)}
    return {"student": paired.student.to_dict(), "teacher": paired.teacher.to_dict(), "exit_shares": shares,
            "prepare_s": prepare_seconds}


if __name__ == "__main__":
    _serve()
