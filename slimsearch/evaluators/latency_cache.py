"""Latencies already measured, keyed by the deployed architecture, so one is never timed twice.

Latency depends on the graph a runtime executes (operators, shapes, data types, quantization
placement), not on the values of its weights: dense float and int8 kernels take as long whatever
numbers they multiply. So the key is the deployed ONNX graph with every initializer's *values*
removed (names, shapes and types kept), plus the measuring conditions. Two candidates that deploy
to the same graph (a trial's untrained and fine-tuned forms, or two candidates whose choices round
to the same widths) share one measurement. Models whose latency depends on their weights' answers
(early exits) are not cached.

The cache lives in the run folder (`latency-cache.jsonl`, one JSON line per measurement, appended)
so a resumed search and its parallel workers on this machine reuse it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from slimsearch.evaluators.latency import LatencySettings, Measurement, PairedMeasurement

FILE_NAME = "latency-cache.jsonl"
_VALUE_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data",
                 "external_data", "data_location")  # where weights above 2 GB are kept: not the graph


def architecture_key(onnx_path: str | Path, settings: LatencySettings) -> str:
    """A hash of the graph in `onnx_path` without its weight values, and of how it is measured."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for initializer in model.graph.initializer:
        for field in _VALUE_FIELDS:
            initializer.ClearField(field)
    digest = hashlib.sha256(model.graph.SerializeToString(deterministic=True))
    digest.update(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    return digest.hexdigest()[:24]


class LatencyCache:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / FILE_NAME
        self._entries: dict[str, PairedMeasurement] = {}
        self._offset = 0  # bytes of the file already read: a miss reads only what was appended since
        self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            appended = handle.read()
        complete = appended[:appended.rfind(b"\n") + 1]  # a line still being written waits for next time
        self._offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                self._entries[entry["key"]] = PairedMeasurement(student=Measurement(**entry["student"]),
                                                                teacher=Measurement(**entry["teacher"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed process, then appended to: measured again

    def get(self, key: str) -> PairedMeasurement | None:
        if key not in self._entries:
            self._read()  # another worker of this run may have measured it meanwhile
        return self._entries.get(key)

    def put(self, key: str, measured: PairedMeasurement) -> None:
        self._entries[key] = measured
        line = json.dumps({"key": key, "student": measured.student.to_dict(), "teacher": measured.teacher.to_dict()})
        # One short append per measurement: lines of concurrent workers do not interleave.
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
