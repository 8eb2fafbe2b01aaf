"""Float vs int8 latency of the digits teacher, on ONNX Runtime and on eager torch, in one run.

    .venv/bin/python bench/quant_latency.py [--threads 1] [--batch-sizes 1 32] [--out bench/results/quant_latency.json]

Each pair (float and int8 of one runtime) is timed with slimsearch's own measurement: warm-up,
alternating rounds in one locked window, medians. The int8 forms are the ones a search ships:
- onnxruntime: the QDQ model from `export_deployed` (every conv / linear at 8 bits, calibrated
  on training inputs), which ORT fuses into int8 kernels;
- torch: torch.ao FX-graph static quantization (fbgemm / x86 int8 kernels, BatchNorm fused). If
  this torch build cannot do it, the row says why instead of a number.
Accuracies are on the test split, so a speed-up that breaks the model shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from slimsearch.config import SpaceConfig
from slimsearch.evaluators import latency
from slimsearch.evaluators.accuracy import accuracy, accuracy_from_logits
from slimsearch.evaluators.deploy import export_onnx, onnx_predict, onnx_session
from slimsearch.evaluators.quantized_deploy import export_deployed
from slimsearch.evaluators.size import file_size_bytes, packed_size_bytes
from slimsearch.spaces import Space
from slimsearch.tasks import create_task
from slimsearch.techniques import build_student
from slimsearch.techniques.quantization import calibrate

SPACE = SpaceConfig(families=("quant",))


def int8_student(task):
    space = Space.discover(task.teacher, task.example_input, SPACE)
    candidate = space.candidate({p.name: "8-uniform" for p in space.parameters()})
    return calibrate(build_student(candidate, task.teacher, task.example_input, SPACE), task.train.tensors[0])


def torch_int8(task):
    """The teacher as a torch.ao static int8 model, or the reason there is none."""
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        torch.backends.quantized.engine = engine
        model = prepare_fx(task.teacher.eval(), get_default_qconfig_mapping(engine), (task.example_input,))
        with torch.no_grad():
            for batch in task.train.tensors[0][:512].split(64):
                model(batch)
        return convert_fx(model), engine
    except Exception as error:  # deprecated / removed in some torch builds: report, do not fail the bench
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"


def pair(float_runner, int8_runner, settings) -> dict:
    measured = latency.measure_pair(int8_runner, float_runner, settings)
    return {"float_ms": measured.teacher.median_ms, "int8_ms": measured.student.median_ms,
            "float_iqr_ms": measured.teacher.iqr_ms, "int8_iqr_ms": measured.student.iqr_ms,
            "int8_speedup": measured.speedup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quant_latency.json"))
    args = parser.parse_args()

    task = create_task("digits")
    teacher, example = task.teacher.eval(), task.example_input
    inputs, labels = task.test.tensors
    student = int8_student(task)
    ao_model, ao_note = torch_int8(task)
    rows: list[dict] = []
    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": args.threads, "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        float_onnx = export_onnx(teacher, example, Path(tmp) / "float.onnx")
        int8_onnx = export_deployed(student, example, Path(tmp) / "int8.onnx", calibration_inputs=task.train.tensors[0])
        results["sizes"] = {"float_packed_bytes": packed_size_bytes(teacher), "int8_packed_bytes": packed_size_bytes(student),
                            "float_onnx_bytes": file_size_bytes(float_onnx), "int8_onnx_bytes": file_size_bytes(int8_onnx)}
        results["accuracy"] = {
            "float_torch": accuracy(teacher, task.test), "int8_fakequant_torch": accuracy(student, task.test),
            "int8_onnxruntime": accuracy_from_logits(onnx_predict(onnx_session(int8_onnx, threads=1), inputs), labels),
        }
        if ao_model is not None:
            with torch.no_grad():
                results["accuracy"]["int8_torch_ao"] = accuracy_from_logits(ao_model(inputs), labels)
        for batch_size in args.batch_sizes:
            settings = latency.LatencySettings(runtime="onnxruntime", batch_size=batch_size, threads=args.threads,
                                               warmup=20, repeats=args.repeats, rounds=5)
            float_runner = latency.make_runner(teacher, example, settings, onnx_path=float_onnx)
            int8_runner = latency.make_runner(teacher, example, settings, onnx_path=int8_onnx)
            rows.append({"runtime": "onnxruntime", "batch_size": batch_size, **pair(float_runner, int8_runner, settings)})
            torch_settings = latency.LatencySettings(runtime="torch", batch_size=batch_size, threads=args.threads,
                                                     warmup=20, repeats=args.repeats, rounds=5)
            if ao_model is None:
                rows.append({"runtime": "torch", "batch_size": batch_size, "note": ao_note})
                continue
            float_runner = latency.make_runner(teacher, example, torch_settings)
            int8_runner = latency.make_runner(ao_model, example, torch_settings)
            rows.append({"runtime": "torch", "batch_size": batch_size, "engine": ao_note,
                         **pair(float_runner, int8_runner, torch_settings)})

    print(f"digits teacher, {args.threads} thread(s), {results['machine']}, torch {torch.__version__}")
    for row in rows:
        if "note" in row:
            print(f"  {row['runtime']:<11} batch {row['batch_size']:>3}: no int8 model ({row['note']})")
        else:
            print(f"  {row['runtime']:<11} batch {row['batch_size']:>3}: float {row['float_ms']:.3f} ms, "
                  f"int8 {row['int8_ms']:.3f} ms, int8 speed-up {row['int8_speedup']:.2f}x")
    print("  sizes:", ", ".join(f"{k} {v}" for k, v in results["sizes"].items()))
    print("  test accuracy:", ", ".join(f"{k} {v:.2%}" for k, v in results["accuracy"].items()))
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
