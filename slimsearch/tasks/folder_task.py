"""`torchvision:<model>` or `timm:<model>` with `--weights CKPT --data DIR`: the user's trained model on their images.

The model is built with random weights for the folder's number of classes (nothing is
downloaded: torchvision's `weights=None`, timm's `pretrained=False`), then the user's checkpoint
is loaded into it. Images are resized to `image_size` (default: the size the model is usually
fed, 224 for torchvision's ImageNet models) and normalised with the model's usual mean and
standard deviation. Every problem (the layout, an unreadable image, a checkpoint of another
architecture or class count) is one TaskError naming the path and what was expected.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from slimsearch.errors import TaskError
from slimsearch.tasks.base import Task
from slimsearch.tasks.image_folder import Preprocess, image_folder_splits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def folder_task(family: str, model: str, *, data: str, weights: str | None, image_size: int | None,
                cache_dir: Path | None = None, seed: int = 0) -> Task:
    """The Task of `family` ('torchvision' or 'timm') model `model`, its checkpoint `weights` and folder `data`."""
    from slimsearch.config import default_cache_dir

    task_name = f"{family}:{model}"
    if weights is None:
        raise TaskError(f"task {task_name!r} with data {str(data)!r} needs weights: the checkpoint of {model} trained "
                        f"on these classes (--weights CKPT, or weights = 'CKPT' in search.toml)")
    builder = _torchvision_builder(model) if family == "torchvision" else _timm_builder(model)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # The layout first: it fixes the class count the model is built for (and so its input size).
    splits = image_folder_splits(data, Preprocess(size=image_size or 224), cache_dir=cache_dir)
    classes = splits.classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random init is overwritten by the checkpoint; seeded all the same
        net = builder(len(classes))
    usual_size, mean, std = _usual_input(family, model, net)
    size = image_size or usual_size
    for split in (splits.train, splits.val, splits.test):
        split.preprocess = Preprocess(size=size, mean=mean, std=std)
    from slimsearch.tasks.checkpoint import load_checkpoint

    load_checkpoint(weights, net, model_name=f"{family} {model}", num_classes=len(classes),
                    classes_from=str(Path(data) / "train"))
    _check_forward(net.eval(), task_name, size, len(classes))
    info = {
        "dataset": str(data),
        "description": f"{family} {model} from {weights}, on {data} ({len(classes)} classes, {size}x{size} RGB)",
        "teacher_weights": str(weights),
        "classes": classes if len(classes) <= 100 else len(classes),
        "image_size": size,
        "val_split": "20% of train/ (seeded, per class)" if splits.val_from_train else "val/",
        "test_split": "the validation split (no test/ folder)" if splits.test_from_val else "test/",
    }
    return Task(name=task_name, teacher=net.eval(), train=splits.train, val=splits.val, test=splits.test,
                example_input=splits.train[0][0].unsqueeze(0), num_classes=len(classes), info=info)


def _torchvision_builder(model: str):
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(known[:3])}"
        raise TaskError(f"unknown torchvision model {model!r} in task 'torchvision:{model}'; {hint} "
                        f"(see torchvision.models.list_models())")
    return lambda classes: torchvision.models.get_model(model, weights=None, num_classes=classes)


def _timm_builder(model: str):
    try:
        import timm
    except ImportError:
        raise TaskError(f"task 'timm:{model}' needs the timm package, which is not installed; install it with "
                        f"pip install 'slimsearch[timm]' (or pip install timm)") from None
    known = timm.list_models()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise TaskError(f"unknown timm model {model!r} in task 'timm:{model}'; {hint}")
    return lambda classes: timm.create_model(model, pretrained=False, num_classes=classes)


def _usual_input(family: str, model: str, net: nn.Module) -> tuple[int, tuple, tuple]:
    """(side, mean, std) the model is usually fed: read from the model and its weights' metadata, never downloaded."""
    if family == "timm":
        config = getattr(net, "pretrained_cfg", None) or {}
        size = (config.get("input_size") or (3, 224, 224))[-1]
        return int(size), tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))
    fixed = getattr(net, "image_size", None)  # ViTs are built for one size
    if isinstance(fixed, int):
        return fixed, IMAGENET_MEAN, IMAGENET_STD
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(model)
        entry = getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT
        keywords = getattr(entry.transforms, "keywords", {})
    except Exception:  # a model without published weights: the ImageNet convention
        keywords = {}
    return (int(keywords.get("crop_size", 224)), tuple(keywords.get("mean", IMAGENET_MEAN)),
            tuple(keywords.get("std", IMAGENET_STD)))


def _check_forward(net: nn.Module, task_name: str, size: int, classes: int) -> None:
    """Fail when the task is made, naming the size, rather than inside the first trial."""
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, 3, size, size))
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise TaskError(f"{task_name}: the model's forward pass fails on images of {size}x{size} "
                        f"({type(error).__name__}: {first_line}); choose another image_size (--image-size)") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TaskError(f"{task_name}: the model returned {got} for one {size}x{size} image; expected logits of shape "
                        f"(1, {classes})")
