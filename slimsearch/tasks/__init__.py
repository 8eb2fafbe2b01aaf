"""Tasks: a teacher, its data and an example input. Create one by name with `create_task`.

Names: the built-ins from `list_tasks()` ('digits', 'mnist1d'), `torchvision:<model>` for any
torchvision classification model and `timm:<model>` for a timm one (both with the user's
checkpoint and image folder: `data`, `weights`), and `package.module:function` for a user factory.
"""

from slimsearch.tasks.base import Task
from slimsearch.tasks.registry import create_task, list_tasks, register_task, task_from_config

# Imported for their @register_task side effect; their heavy imports (sklearn, mnist1d) are lazy.
from slimsearch.tasks import digits as _digits  # noqa: E402,F401
from slimsearch.tasks import mnist1d as _mnist1d  # noqa: E402,F401

__all__ = ["Task", "create_task", "list_tasks", "register_task", "task_from_config"]
