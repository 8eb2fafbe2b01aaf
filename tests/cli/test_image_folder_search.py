"""A user's own model and images end to end: `slimsearch run --task torchvision:resnet18 --weights ... --data ...`,
then front, report and export; and memory that does not grow with the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import REPO, slimsearch_cli
from tests.tasks.image_data import example, write_folder

SIZE = 32


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_checkpoint_and_folder_through_front_report_and_export(tmp_path):
    # The digits as 32x32 RGB images: all 360 test and 359 validation images (so one flipped
    # prediction moves accuracy by 0.3 points), 30 train images per class.
    images = write_folder(tmp_path / "images", size=SIZE)
    for digit in (images / "train").iterdir():
        for extra in sorted(digit.iterdir())[30:]:
            extra.unlink()
    teacher = tmp_path / "teacher.pt"
    example("train_teacher").train(str(images), str(teacher), model="resnet18", size=SIZE, epochs=4, workers=0)

    run = slimsearch_cli("run", "--task", "torchvision:resnet18", "--data", str(images), "--weights", str(teacher),
                         "--image-size", str(SIZE), "--latency-budget", "0.9x", "--trials", "3", "--steps", "12",
                         "--val-samples", "60", "--runs-dir", str(tmp_path / "runs"), "--name", "mine", timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = tmp_path / "runs" / "mine"
    assert "Re-evaluating" in run.stderr and (run_dir / "report.html").exists()

    front = slimsearch_cli("front", str(run_dir), "--json")
    assert front.returncode == 0, front.stderr
    records = json.loads(front.stdout)
    assert records and all(record["test_accuracy"] is not None for record in records)
    report = slimsearch_cli("report", str(run_dir), "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0 and (tmp_path / "report.html").stat().st_size > 10_000

    single_graph = [r for r in records
                    if all(v == "off" for k, v in r["candidate"]["choices"].get("exits", {}).items() if k != "criterion")]
    chosen = max(single_graph or records, key=lambda r: r["accuracy"])
    out = tmp_path / "exported"
    export = slimsearch_cli("export", str(run_dir), "--trial", str(chosen["trial"]), "-o", str(out), timeout=1200)
    assert export.returncode == 0, export.stderr[-3000:]

    # The exported model, fed the folder's test images the ordinary torchvision way, scores what was reported.
    import torchvision
    from torchvision import transforms

    preprocess = transforms.Compose([transforms.Resize((SIZE, SIZE)), transforms.ToTensor(),
                                     transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    test = torchvision.datasets.ImageFolder(str(images / "test"), preprocess)
    inputs = torch.stack([test[i][0] for i in range(len(test))]).numpy()
    labels = np.array(test.targets)
    if (out / "model.onnx").exists():
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        predictions = session.run(None, {"input": inputs})[0].argmax(1)
    else:  # an early-exit model ships as segments and a runner
        sys.path.insert(0, str(out / "exits"))
        try:
            from runner import EarlyExitRunner
        finally:
            sys.path.pop(0)
        predictions = EarlyExitRunner(out / "exits").predict(inputs)[0].argmax(1)
    assert abs(float((predictions == labels).mean()) - chosen["test_accuracy"]) <= 0.005


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_peak_memory_does_not_grow_with_the_folder(tmp_path):
    """The same search on a folder ten times larger peaks within 1.25x the resident memory.

    At 128x128 the larger folder's images are about 0.5 GB as float tensors, a third of the
    search's own footprint: a split held whole in memory (or the teacher's logits over it held
    as one tensor, or a DataLoader keeping every path as a Python object) would show.
    """
    small = write_folder(tmp_path / "small", size=128, limit_per_class=25)  # 250 images
    large = tmp_path / "large"  # the same digits, 10 differently coloured copies of each: 2500 images
    write_folder(large, size=128, limit_per_class=25, copies=10)
    checkpoint = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), checkpoint)
    peaks = {name: _peak_rss(folder, checkpoint, tmp_path / f"runs-{name}") for name, folder in
             (("small", small), ("large", large))}
    print(f"peak RSS in kB: {peaks}")  # shown with pytest -s
    for process in ("self", "children"):
        assert peaks["large"][process] <= 1.25 * peaks["small"][process], peaks
    shutil.rmtree(large)


def _peak_rss(folder, checkpoint, runs) -> dict[str, int]:
    script = textwrap.dedent(f"""
        import json, resource, slimsearch
        slimsearch.search(task="torchvision:resnet18", data={str(folder)!r}, weights={str(checkpoint)!r},
                          image_size=128, latency_budget="2x", trials=1, runs_dir={str(runs)!r}, val_samples=40,
                          finetune={{"steps": 4, "batch_size": 32}}, space={{"families": ["prune", "distill"]}},
                          latency={{"warmup": 1, "repeats": 10, "rounds": 2}})
        print(json.dumps({{"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
