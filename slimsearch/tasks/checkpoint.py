"""A user's checkpoint loaded into a freshly built model, or one line saying why it does not fit.

A checkpoint is a state dict (`torch.save(model.state_dict(), path)`) or a dict holding one
under a usual key ('state_dict', 'model', ...), as training scripts save them. It is read with
`torch.load(weights_only=True)`: tensors and plain containers only, never pickled code.
"""

from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

from slimsearch.errors import TaskError

# Where training scripts (Lightning, timm, torchvision's references, plain loops) keep the state dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "net", "weights")
# Prefixes wrappers add to every name: DataParallel / DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def load_checkpoint(path: str | os.PathLike, model: nn.Module, *, model_name: str, num_classes: int,
                    classes_from: str) -> None:
    """Load `path` into `model` (built for `num_classes` classes, counted in `classes_from`), strictly."""
    where = str(path)
    if not os.path.exists(where):
        raise TaskError(f"checkpoint {where!r} does not exist; expected a file written by "
                        f"torch.save(model.state_dict(), path)")
    if os.path.isdir(where):
        raise TaskError(f"checkpoint {where!r} is a folder; expected a file written by torch.save(model.state_dict(), path)")
    try:
        loaded = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise TaskError(f"checkpoint {where!r} cannot be read with torch.load(weights_only=True) ({first_line}); "
                        f"expected a state dict saved with torch.save(model.state_dict(), path), not a pickled model"
                        ) from None
    state = _state_dict(loaded, where)
    expected = model.state_dict()
    _check_names(state, expected, where, model_name)
    _check_shapes(state, expected, where, model_name, num_classes, classes_from)
    model.load_state_dict(state, strict=True)


def _state_dict(loaded: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and loaded and not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        for key in STATE_DICT_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
    if not (isinstance(loaded, Mapping) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values())):
        keys = list(loaded)[:6] if isinstance(loaded, Mapping) else type(loaded).__name__
        raise TaskError(f"checkpoint {where!r} holds no state dict (found {keys}); expected tensors by parameter "
                        f"name, or a dict holding them under one of {', '.join(map(repr, STATE_DICT_KEYS))}")
    state = dict(loaded)
    for prefix in WRAPPER_PREFIXES:
        if all(name.startswith(prefix) for name in state):
            state = {name[len(prefix):]: tensor for name, tensor in state.items()}
    return state


def _check_names(state: dict, expected: dict, where: str, model_name: str) -> None:
    unexpected = [name for name in state if name not in expected]
    missing = [name for name in expected if name not in state]
    if unexpected or missing:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} of its tensors are not in the model (e.g. {unexpected[0]!r})")
        if missing:
            parts.append(f"{len(missing)} of the model's are missing from it (e.g. {missing[0]!r})")
        raise TaskError(f"checkpoint {where!r} is not a {model_name} checkpoint: {' and '.join(parts)}; expected "
                        f"the state dict of {model_name} (is it another architecture?)")


def _check_shapes(state: dict, expected: dict, where: str, model_name: str, num_classes: int, classes_from: str) -> None:
    for name, tensor in expected.items():
        found = state[name]
        if found.shape == tensor.shape:
            continue
        # The classifier's rows are the classes: a head of another width is a class-count mismatch.
        if tensor.dim() >= 1 and tensor.shape[0] == num_classes and found.dim() == tensor.dim() \
                and found.shape[1:] == tensor.shape[1:]:
            raise TaskError(f"checkpoint {where!r} has a {found.shape[0]}-class head ({name} is {tuple(found.shape)}), "
                            f"but {classes_from!r} has {num_classes} class folders; expected a checkpoint trained on "
                            f"these {num_classes} classes")
        raise TaskError(f"checkpoint {where!r} does not fit {model_name}: {name} is {tuple(found.shape)} in it but "
                        f"{tuple(tensor.shape)} in the model; expected the state dict of {model_name} (is it another "
                        f"variant or architecture?)")
