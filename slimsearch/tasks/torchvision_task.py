"""`torchvision:<model>`: any torchvision classification model, trained from scratch on a built-in dataset.

These tasks exist to check that knob families apply to real architectures, not for
accuracy, so teacher training is short. Nothing is downloaded (`weights=None`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from slimsearch.errors import TaskError
from slimsearch.evaluators.train import fit
from slimsearch.tasks.base import Task
from slimsearch.tasks.digits_data import digits_splits
from slimsearch.tasks.teachers import task_with_cached_teacher, teacher_key

DATASETS = ("digits",)
IMAGE_SIZE = 32
# 5 epochs: resnet18 ~98% and mobilenet_v2 ~92% test accuracy, 10-25 s each on 2 CPU cores.
EPOCHS = 5
LR = 3e-3
BATCH_SIZE = 64


def torchvision_task(model: str, *, dataset: str = "digits", cache_dir: Path | None = None, seed: int = 0) -> Task:
    """`torchvision.models.get_model(model, weights=None, num_classes=10)` trained briefly on `dataset`.

    Only `dataset="digits"` exists for now: the digits resized to 32x32 and repeated to 3
    channels, i.e. inputs of shape (N, 3, 32, 32). Models that cannot take that input
    (e.g. inception_v3 needs 299x299) raise a TaskError naming the model and the shape.
    """
    import torchvision

    task_name = f"torchvision:{model}"
    known = torchvision.models.list_models(module=torchvision.models)
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(known[:3])}"
        raise TaskError(f"unknown torchvision model {model!r} in task {task_name!r}; {hint} "
                        f"(see torchvision.models.list_models())")
    if dataset not in DATASETS:
        raise TaskError(f"unknown dataset {dataset!r} for task {task_name!r}; allowed: {', '.join(map(repr, DATASETS))}")
    train, val, test = digits_splits(size=IMAGE_SIZE, channels=3)
    input_shape = (3, IMAGE_SIZE, IMAGE_SIZE)

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torchvision.models.get_model(model, weights=None, num_classes=10)

    def train_teacher(net: nn.Module) -> nn.Module:
        _check_forward(net, task_name, input_shape)
        return fit(net, train, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=seed)

    key = teacher_key(f"torchvision-{model}", dataset=dataset, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE,
                      seed=seed, input=input_shape, torchvision=torchvision.__version__)
    return task_with_cached_teacher(
        name=task_name, splits=(train, val, test), build=build, key=key, train=train_teacher,
        dataset=dataset, cache_dir=cache_dir, seed=seed,
        description=f"torchvision {model} (random init, {EPOCHS} epochs) on digits resized to "
                    f"{IMAGE_SIZE}x{IMAGE_SIZE}x3",
    )


def _check_forward(net: nn.Module, task_name: str, input_shape: tuple[int, ...]) -> None:
    """Fail early, with the model and shape named, rather than deep inside training."""
    # A batch of 2 because batch norm in training mode cannot work on a single value per channel.
    probe = torch.zeros(2, *input_shape)
    for training in (True, False):
        net.train(training)
        mode = "training" if training else "eval"
        try:
            with torch.no_grad():
                out = net(probe)
        except Exception as error:
            raise TaskError(
                f"{task_name}: the model's forward pass fails on input of shape (N, {', '.join(map(str, input_shape))}) "
                f"in {mode} mode ({type(error).__name__}: {error}); it probably needs bigger inputs"
            ) from error
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TaskError(f"{task_name}: in {mode} mode the model returned {got} for input of shape "
                            f"(N, {', '.join(map(str, input_shape))}); expected a tensor of logits of shape (N, 10)")
