"""Errors a user can cause. Each message names the bad value and what is allowed.

The CLI prints any `SlimsearchError` as one line and exits with code 2, without a traceback.
"""


class SlimsearchError(Exception):
    """Base class of every error slimsearch raises on purpose."""


class ConfigError(SlimsearchError, ValueError):
    """A setting (flag, TOML key, API argument) has a value that is not allowed."""


class TaskError(SlimsearchError, ValueError):
    """A task name, model name or user task factory is unknown or returned something unusable."""


class StudyMismatchError(SlimsearchError):
    """An existing study was created for a different task or search space."""


class InfeasibleBudgetError(SlimsearchError):
    """No candidate in the search space can meet the latency budget."""


class ExportError(SlimsearchError):
    """An export failed or its artifacts do not match what the search reported."""


class StopRequested(Exception):
    """Raised to stop the work in progress (a trial's time limit): code that falls back to another
    way of doing a step when the first way fails must re-raise it, not try again."""


def os_reason(error: OSError) -> str:
    """Why a path could not be written, in words that point at the path rather than at errno."""
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        return "part of that path is a file, not a folder"
    return error.strerror or str(error)
