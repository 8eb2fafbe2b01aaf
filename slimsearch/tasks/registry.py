"""The task registry: built-in names, `torchvision:<model>` and `package.module:function`.

`create_task` is the one entry point; it parses the name, so the two patterns need no
registration and a typo is reported once, here, with what is allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Callable

from slimsearch.errors import TaskError
from slimsearch.tasks.base import Task

# A built-in factory takes the cache dir and seed as keywords and returns a ready Task.
TaskFactory = Callable[..., Task]

_BUILTIN: dict[str, TaskFactory] = {}

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
_PATTERNS = ("torchvision:<model>", "timm:<model>", "package.module:function")


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Decorator that registers a built-in task factory `f(*, cache_dir, seed) -> Task` as `name`."""
    if not isinstance(name, str) or not name or ":" in name:
        # ':' is reserved for the two patterns create_task parses itself.
        raise ValueError(f"a task name must be a non-empty string without ':', but got {name!r}")

    def decorator(factory: TaskFactory) -> TaskFactory:
        if name in _BUILTIN:
            existing = _BUILTIN[name]
            raise ValueError(
                f"task {name!r} is already registered (by {existing.__module__}.{existing.__qualname__}); "
                f"cannot register {factory.__module__}.{factory.__qualname__} under the same name"
            )
        _BUILTIN[name] = factory
        return factory

    return decorator


def list_tasks() -> list[str]:
    """The built-in task names, then the two name patterns create_task also understands."""
    return sorted(_BUILTIN) + list(_PATTERNS)


def create_task(name: str, *, cache_dir: Path | None = None, seed: int = 0, data: str | None = None,
                weights: str | None = None, image_size: int | None = None) -> Task:
    """Build the task called `name`, training (once, then cached) its teacher if needed.

    `name` is a built-in name (see `list_tasks()`), `torchvision:<model>` for any torchvision
    classification model, `timm:<model>` for a timm model (timm installed), or
    `package.module:function` for a user factory called with no arguments that returns a `Task`.
    With `data` (a folder in ImageFolder layout) and `weights` (the model's checkpoint),
    `torchvision:` and `timm:` models are the user's, on the user's images resized to
    `image_size`; without, `torchvision:<model>` is trained from scratch on the digits data.
    `cache_dir` defaults to `$SLIMSEARCH_CACHE` or `~/.cache/slimsearch`; `seed` seeds training.
    """
    if not isinstance(name, str):
        raise TaskError(f"a task name must be a string, but got {type(name).__name__} {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TaskError(f"seed must be an int, but got {seed!r}")
    own_data = {key: value for key, value in (("data", data), ("weights", weights), ("image_size", image_size))
                if value is not None}
    for prefix in (TORCHVISION_PREFIX, TIMM_PREFIX):
        if name.startswith(prefix) and (own_data or prefix == TIMM_PREFIX):
            if data is None:
                raise TaskError(f"task {name!r} with {', '.join(f'{k}={v!r}' for k, v in own_data.items()) or 'no data'} "
                                f"needs data: a folder of images in ImageFolder layout (--data DIR, or data = 'DIR' "
                                f"in search.toml)")
            from slimsearch.tasks.folder_task import folder_task

            return folder_task(prefix[:-1], name[len(prefix):], data=data, weights=weights, image_size=image_size,
                               cache_dir=cache_dir, seed=seed)
    if own_data:
        given = ", ".join(f"{key}={value!r}" for key, value in own_data.items())
        raise TaskError(f"data, weights and image_size are for the tasks 'torchvision:<model>' and 'timm:<model>', "
                        f"but got {given} with task {name!r} (a task factory reads its own data)")
    if name in _BUILTIN:
        return _BUILTIN[name](cache_dir=cache_dir, seed=seed)
    if name.startswith(TORCHVISION_PREFIX):
        from slimsearch.tasks.torchvision_task import torchvision_task

        return torchvision_task(name[len(TORCHVISION_PREFIX):], cache_dir=cache_dir, seed=seed)
    if ":" in name:
        from slimsearch.tasks.user import load_user_task

        return load_user_task(name)
    raise TaskError(_unknown_task_message(name))


def task_from_config(config, *, task: Task | None = None) -> Task:
    """The task a search config names (or `task`, already made), with the config's data settings on it:
    its data, weights and image size, the search-time validation subset and the loader workers."""
    if task is None:
        task = create_task(config.task, seed=config.seed, data=config.data, weights=config.weights,
                           image_size=config.image_size)
    if config.val_samples is not None:
        task.val_samples = config.val_samples
    if config.loader_workers is not None:
        task.loader_workers = config.loader_workers
    return task


def _unknown_task_message(name: str) -> str:
    builtins = ", ".join(repr(n) for n in sorted(_BUILTIN))
    message = (f"unknown task {name!r}: expected one of {builtins}, 'torchvision:<model>' "
               f"(e.g. 'torchvision:resnet18'), 'timm:<model>' or 'package.module:function'")
    close = difflib.get_close_matches(name, sorted(_BUILTIN), n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return message
