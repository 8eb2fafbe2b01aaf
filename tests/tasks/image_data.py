"""Image folders and checkpoints for tests, made the way a user would make them.

The folders come from the example's own script (examples/image_folder/make_folder.py: digits
drawn as coloured RGB images), checkpoints from torchvision models built with `weights=None`,
saved as plain state dicts; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def example(name: str):
    """A script of examples/image_folder/ as a module."""
    path = REPO / "examples" / "image_folder" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_folder(root: Path, *, size: int = 32, limit_per_class: int | None = None, copies: int = 1) -> Path:
    example("make_folder").write_image_folder(root, size=size, copies=copies, limit_per_class=limit_per_class)
    return root


def random_checkpoint(path: Path, model: str = "resnet18", num_classes: int = 10, **wrap) -> Path:
    """An untrained torchvision model's state dict (optionally wrapped, e.g. key='state_dict')."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.get_model(model, weights=None, num_classes=num_classes).state_dict()
    if wrap.get("prefix"):
        state = {wrap["prefix"] + name: tensor for name, tensor in state.items()}
    torch.save({wrap["key"]: state, "epoch": 3} if wrap.get("key") else state, path)
    return path
