"""User tasks: `package.module:function`, a factory called with no arguments that returns a Task."""

from __future__ import annotations

import importlib
import os
import re
import sys

from slimsearch.errors import TaskError
from slimsearch.tasks.base import Task

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_user_task(spec: str) -> Task:
    """Import `package.module:function`, call it and check that it returned a Task.

    Every way this can fail (bad spec, import error, missing or non-callable attribute, the
    factory raising, a wrong return type) becomes one TaskError that names the factory.
    """
    module_name, _, function_name = spec.partition(":")
    if not _DOTTED.match(module_name) or not _DOTTED.match(function_name):
        raise TaskError(
            f"task factory {spec!r} is not of the form 'package.module:function' "
            f"(dotted Python names on both sides of one ':')"
        )
    _current_folder_importable()
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or anything the module raises while importing
        raise TaskError(
            f"task factory {spec!r}: cannot import module {module_name!r} ({type(error).__name__}: {error})"
        ) from error
    factory = module
    for part in function_name.split("."):
        try:
            factory = getattr(factory, part)
        except AttributeError:
            raise TaskError(
                f"task factory {spec!r}: module {module_name!r} has no attribute {function_name!r}"
            ) from None
    if not callable(factory):
        raise TaskError(
            f"task factory {spec!r} is not callable (it is a {type(factory).__name__}); "
            f"it must be a function that takes no arguments and returns a slimsearch Task"
        )
    try:
        task = factory()
    except TaskError as error:  # the Task it built was refused (e.g. data that does not fit the model)
        raise TaskError(f"task factory {spec!r}: {error}") from error
    except Exception as error:
        # Anything else the factory raises is wrapped, so the message always says which factory failed.
        raise TaskError(f"task factory {spec!r} raised {type(error).__name__}: {error}") from error
    if not isinstance(task, Task):
        raise TaskError(
            f"task factory {spec!r} returned {type(task).__name__}, but it must return a "
            f"slimsearch.tasks.Task"
        )
    return task


def _current_folder_importable() -> None:
    """Put the current folder on sys.path, as `python -m` does: `--task mymodule:make` run beside
    mymodule.py finds it without PYTHONPATH (the console script alone would not look there)."""
    here = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == here for entry in sys.path):
        sys.path.insert(0, here)
