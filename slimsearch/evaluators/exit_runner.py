"""Runs an early-exit model exported by slimsearch: ONNX segments plus the thresholds between them.

This file is copied next to the exported segments as `runner.py` and needs only numpy and
onnxruntime, so it ships as it is:

    python runner.py EXPORT_FOLDER inputs.npy          # one JSON line per sample
    from runner import EarlyExitRunner                  # or use it from Python

`exits.json` lists the segments in order. Every segment but the last returns the tensor the next
one needs and its exit head's logits; a sample leaves at the first exit whose confidence (the
top softmax probability, or 1 - entropy / log(classes)) reaches that exit's threshold, and the
later segments are not run for it. Samples run one at a time: that is what exits are for.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np

MANIFEST = "exits.json"
FORMAT = "slimsearch-early-exit"


def confidence(logits: np.ndarray, criterion: str) -> np.ndarray:
    """Per-row confidence in [0, 1]; the same arithmetic as slimsearch.techniques.exits.confidence."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    if criterion == "max_prob":
        return probabilities.max(axis=1)
    if criterion == "entropy":
        entropy = -(probabilities * np.log(np.clip(probabilities, 1e-12, None))).sum(axis=1)
        return 1.0 - entropy / math.log(logits.shape[1])
    raise ValueError(f"exit criterion must be 'max_prob' or 'entropy', but got {criterion!r}")


def default_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class EarlyExitRunner:
    """`run(x)` for one sample gives (logits, exit index); `predict(inputs)` does every row.

    `thresholds` overrides the exported ones (e.g. to try others: no retraining is needed);
    `make_session(path)` builds the ONNX Runtime sessions (default: CPU, `threads` threads).
    """

    def __init__(self, folder: str | Path, *, threads: int = 1, thresholds: list[float] | None = None,
                 make_session: Callable[[Path], object] | None = None):
        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{folder / MANIFEST} is not a slimsearch early-exit manifest")
        segments = manifest["segments"]
        make_session = make_session or (lambda path: default_session(path, threads))
        self.sessions = [make_session(folder / segment["file"]) for segment in segments]
        self.input_names = [session.get_inputs()[0].name for session in self.sessions]
        self.exit_names = [segment.get("exit", "final") for segment in segments]
        self.criterion = manifest["criterion"]
        self.thresholds = [float(t) for t in (thresholds if thresholds is not None else
                                              [segment["threshold"] for segment in segments[:-1]])]
        if len(self.thresholds) != len(segments) - 1:
            raise ValueError(f"{len(segments) - 1} exits need as many thresholds, but got {len(self.thresholds)}")

    def run(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        for index, threshold in enumerate(self.thresholds):
            x, logits = self.sessions[index].run(None, {self.input_names[index]: x})
            if confidence(logits, self.criterion)[0] >= threshold:
                return logits, index
        last = len(self.sessions) - 1
        return self.sessions[last].run(None, {self.input_names[last]: x})[0], last

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, exit index) for every row of `inputs`, each run on its own."""
        results = [self.run(np.ascontiguousarray(inputs[i:i + 1])) for i in range(len(inputs))]
        return np.concatenate([logits for logits, _ in results]), np.array([index for _, index in results])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an exported slimsearch early-exit model on a .npy batch.")
    parser.add_argument("folder", help="the export folder holding exits.json and the segments")
    parser.add_argument("inputs", help="a .npy file of inputs shaped like the model's (batch first)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    runner = EarlyExitRunner(args.folder, threads=args.threads)
    logits, exits = runner.predict(np.load(args.inputs, allow_pickle=False).astype(np.float32))
    for row, index in zip(logits, exits):
        print(json.dumps({"prediction": int(row.argmax()), "exit": runner.exit_names[index]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
