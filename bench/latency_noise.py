"""Where a latency ratio's noise comes from: one trial's deployed graph re-timed against the teacher.

    python bench/latency_noise.py RUN_DIR TRIAL [--windows 8] [--rounds 2]

RUN_DIR is a finished search's folder (its run.json names the task, seed and latency settings;
trials.csv the trial's candidate). Each round times, on ONNX Runtime as a trial does:
- one student session in WINDOWS windows against one teacher session (what a window's luck moves);
- WINDOWS fresh student sessions, a window each (what a session's luck adds);
- WINDOWS fresh teacher sessions against the first student session (the divisor's share).
Each line gives the ratio's median, min and max and both models' medians per window, so which side
moved can be read off. Run it on a quiet machine: beside another job it measures that job.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def _report(label: str, pairs: list[tuple[float, float]]) -> None:
    times = np.array(pairs)
    ratios = times[:, 0] / times[:, 1]
    print(f"{label}: ratio median {np.median(ratios):.4f}, min {ratios.min():.4f}, max {ratios.max():.4f} "
          f"(max/min {ratios.max() / ratios.min():.2f}); student ms {' '.join(f'{x:.3f}' for x in times[:, 0])}; "
          f"teacher ms {' '.join(f'{x:.3f}' for x in times[:, 1])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished search's folder")
    parser.add_argument("trial", type=int, help="the trial whose candidate is re-timed")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from slimsearch.config import SearchConfig
    from slimsearch.evaluators.deploy import export_onnx
    from slimsearch.evaluators.latency import make_runner, measure_pair
    from slimsearch.evaluators.quantized_deploy import export_deployed
    from slimsearch.search.trial import _calibration, latency_settings
    from slimsearch.spaces import Candidate
    from slimsearch.tasks import create_task
    from slimsearch.techniques import build_student

    saved = json.loads((args.run / "run.json").read_text())["config"]
    config = SearchConfig.from_mapping({k: v for k, v in saved.items() if v is not None}, source=str(args.run))
    task = create_task(saved["task"], seed=saved["seed"])
    settings = latency_settings(config)
    trials = pd.read_csv(args.run / "trials.csv").set_index("trial")
    if args.trial not in trials.index:
        parser.error(f"trial {args.trial} is not in {args.run / 'trials.csv'} (it holds {trials.index.min()}-{trials.index.max()})")
    candidate = Candidate.from_dict(json.loads(trials.loc[args.trial, "candidate"]))
    student = build_student(candidate, task.teacher, task.example_input, config.space)
    folder = Path(tempfile.mkdtemp(prefix="latency-noise-"))
    teacher_path = export_onnx(task.teacher, task.example_input, folder / "teacher.onnx")
    student_path = export_deployed(student, task.example_input, folder / "student.onnx",
                                   calibration_inputs=_calibration(task, student))

    def session(path: Path):
        return make_runner(None, task.example_input, settings, onnx_path=path)

    def window(student_run, teacher_run) -> tuple[float, float]:
        measured = measure_pair(student_run, teacher_run, settings)
        return measured.student.median_ms, measured.teacher.median_ms

    print(f"trial {args.trial}: recorded first ratio {trials.loc[args.trial, 'first_latency_ratio']:.4f}", flush=True)
    teacher, same = session(teacher_path), session(student_path)
    for _ in range(args.rounds):
        _report(f"one session, {args.windows} windows", [window(same, teacher) for _ in range(args.windows)])
        _report(f"{args.windows} fresh student sessions", [window(session(student_path), teacher) for _ in range(args.windows)])
        _report(f"{args.windows} fresh teacher sessions", [window(same, session(teacher_path)) for _ in range(args.windows)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
