"""A student's accuracy as it ships: through the runtime's own kernels, sample by sample where
it exits early.

Fine-tuning computes with fake-quant arithmetic (float numbers rounded to the int8 grid); ONNX
Runtime's int8 kernels round and accumulate differently, and its activation ranges come from
its own calibration. An early-exit model is evaluated in training as one batch with every exit
computed; the shipped runner takes one sample at a time, and a sample near a threshold may leave
at another exit after the export's rounding. Either way the two disagree on a few samples in a
hundred, so the figures a user picks a model by (the front, the model card) are taken from the
deployed form itself: the same QDQ int8 ONNX file, or exit segments run by the shipped runner,
that a trial is timed as and export writes. On eager torch the deployed form is the folded model
(quantized weights, float activations). Other float students deploy to numbers within 1e-3 of
torch's, so they are not run again.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from slimsearch.evaluators.accuracy import accuracy_from_logits


def deployed_accuracy(student: torch.nn.Module, task, settings, workdir: Path,
                      splits: dict[str, Dataset]) -> dict[str, float] | None:
    """Accuracy on each of `splits` ({"val": ..., "test": ...}) of a quantized or early-exit
    student's deployed form, read batch by batch; None for other students."""
    from slimsearch.evaluators.exit_deploy import is_early_exit
    from slimsearch.techniques.quantization import quantized_layers

    if not quantized_layers(student) and not is_early_exit(student):
        return None
    if settings.runtime != "onnxruntime":  # eager torch, exits or not
        from slimsearch.evaluators.train import predict_logits
        from slimsearch.techniques.quantization import fold

        folded = fold(student)
        predict = lambda inputs: predict_logits(folded, inputs)  # noqa: E731
    elif is_early_exit(student):
        predict = _exit_runner(student, task, settings, Path(workdir) / "accuracy-exits")
    else:
        predict = _onnx_session(student, task, settings, Path(workdir) / "accuracy.onnx")
    from slimsearch.evaluators.train import predict_dataset

    return {name: accuracy_from_logits(*predict_dataset(predict, split, workers=task.loader_workers))
            for name, split in splits.items()}


def _onnx_session(student, task, settings, path: Path):
    from slimsearch.evaluators.deploy import onnx_predict, onnx_session
    from slimsearch.evaluators.quantized_deploy import export_deployed

    export_deployed(student, task.example_input, path, calibration_inputs=task.calibration_inputs())
    # One thread: this runs in the trial's process, beside whatever trains on the other cores.
    session = onnx_session(path, threads=1, device=settings.device)
    return lambda inputs: onnx_predict(session, inputs)


def _exit_runner(student, task, settings, folder: Path):
    import numpy as np

    from slimsearch.evaluators.deploy import onnx_session
    from slimsearch.evaluators.exit_deploy import export_early_exit
    from slimsearch.evaluators.exit_runner import EarlyExitRunner

    export_early_exit(student, task.example_input, folder, calibration_inputs=task.calibration_inputs())
    runner = EarlyExitRunner(folder, make_session=lambda path: onnx_session(path, threads=1, device=settings.device))
    return lambda inputs: torch.from_numpy(np.asarray(runner.predict(inputs.numpy())[0]))
