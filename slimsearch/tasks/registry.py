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
_PATTERNS = ("torchvision:<model>", "package.module:function")


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


def create_task(name: str, *, cache_dir: Path | None = None, seed: int = 0) -> Task:
    """Build the task called `name`, training (once, then cached) its teacher if needed.

    `name` is a built-in name (see `list_tasks()`), `torchvision:<model>` for any torchvision
    classification model trained on the digits data, or `package.module:function` for a user
    factory called with no arguments that returns a `Task`. `cache_dir` defaults to
    `$SLIMSEARCH_CACHE` or `~/.cache/slimsearch`; `seed` seeds the teacher's training.
    """
    if not isinstance(name, str):
        raise TaskError(f"a task name must be a string, but got {type(name).__name__} {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TaskError(f"seed must be an int, but got {seed!r}")
    if name in _BUILTIN:
        return _BUILTIN[name](cache_dir=cache_dir, seed=seed)
    if name.startswith(TORCHVISION_PREFIX):
        from slimsearch.tasks.torchvision_task import torchvision_task

        return torchvision_task(name[len(TORCHVISION_PREFIX):], cache_dir=cache_dir, seed=seed)
    if ":" in name:
        from slimsearch.tasks.user import load_user_task

        return load_user_task(name)
    raise TaskError(_unknown_task_message(name))


def _unknown_task_message(name: str) -> str:
    builtins = ", ".join(repr(n) for n in sorted(_BUILTIN))
    message = (f"unknown task {name!r}: expected one of {builtins}, 'torchvision:<model>' "
               f"(e.g. 'torchvision:resnet18') or 'package.module:function'")
    close = difflib.get_close_matches(name, sorted(_BUILTIN), n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return message
