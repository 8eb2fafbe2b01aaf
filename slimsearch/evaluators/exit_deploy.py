"""The deployment form of an early-exit student: one ONNX file per segment, `exits.json`, and
the runner that applies the thresholds (`runner.py`, a copy of evaluators/exit_runner.py).

Segments rather than one graph with ONNX `If` control flow: each is an ordinary graph, so
quantized segments get the same QDQ int8 treatment as any model (quantized_deploy.py), and the
runner is twenty lines of numpy anyone can read. A segment's example and calibration inputs are
what the segments before it produce.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from slimsearch.evaluators import exit_runner
from slimsearch.evaluators.quantized_deploy import CALIBRATION_SAMPLES, export_deployed

SEGMENT_OUTPUTS = ("activation", "exit_logits")


def is_early_exit(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "exit_logits", None)) and hasattr(model, "segments")


@torch.no_grad()
def export_early_exit(model: torch.nn.Module, example_input: torch.Tensor, folder: str | Path, *,
                      calibration_inputs: torch.Tensor | None = None) -> Path:
    """Write segments, manifest and runner into `folder`; returns the manifest's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    x = example_input.detach().cpu()
    calibration = None if calibration_inputs is None else calibration_inputs[:CALIBRATION_SAMPLES].detach().cpu()
    segments = []
    last = len(model.segments) - 1
    for index, segment in enumerate(model.segments):
        name = f"segment{index}.onnx"
        outputs = SEGMENT_OUTPUTS if index < last else ("logits",)
        export_deployed(segment, x, folder / name, calibration_inputs=calibration, output_names=outputs)
        entry = {"file": name}
        if index < last:
            entry.update(exit=model.exit_points[index], threshold=model.thresholds[index])
            x = segment(x)[0]
            calibration = None if calibration is None else torch.cat([segment(c)[0] for c in calibration.split(64)])
        segments.append(entry)
    manifest = {"format": exit_runner.FORMAT, "version": 1, "criterion": model.criterion, "segments": segments}
    path = folder / exit_runner.MANIFEST
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, path)
    shutil.copyfile(exit_runner.__file__, folder / "runner.py")
    return path


def segment_files(folder: str | Path) -> list[Path]:
    manifest = json.loads((Path(folder) / exit_runner.MANIFEST).read_text())
    return [Path(folder) / segment["file"] for segment in manifest["segments"]]
