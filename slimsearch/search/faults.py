"""Bad trials: one that raises, returns NaN or overruns its time limit fails alone, with its reason.

`guard_objective` wraps the trial function that Optuna calls. Whatever goes wrong inside is
recorded on the trial as user attr `fail_reason` and re-raised, so Optuna marks the trial
FAIL and the search goes on with the next one (`driver._optimize` stops only after several
failures in a row, which points at the setup rather than at one candidate).

The time limit (`faults.trial_timeout`) is a SIGALRM timer armed around each trial in the
process's main thread. When it fires, `TrialTimeoutError` is raised wherever the trial is
(fine-tuning, ONNX export, waiting for the latency worker) and unwinds it like any other
failure. Two limits of that choice, also stated in the README:

- Python runs signal handlers between bytecodes, so a trial stuck inside one native call that
  never returns (a deadlocked kernel) is only stopped when that call returns. Blocking waits
  on sleeps, pipes and locks are interrupted as they should be.
- Only the main thread receives signals. A search driven from another thread cannot stop a
  trial early; it warns once and fails a trial that overran when that trial ends.

A child process per trial would lift both limits, but it would have to rebuild the task and
reopen the study for every trial; the timer costs nothing while no trial overruns.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
import warnings
from typing import Callable, Iterator, Sequence

from slimsearch.errors import StopRequested
from slimsearch.search.storage import FAIL_REASON_ATTR, OBJECTIVES


class TrialTimeoutError(StopRequested):
    """A trial ran past `faults.trial_timeout`. An Exception, so Optuna fails the trial and goes on."""


# Failures in a row that stop a search: they point at the setup, not at one candidate.
MAX_CONSECUTIVE_FAILURES = 5


def past(deadline: float | None) -> bool:
    """Whether a search's time budget (`deadline`, a `time.time()` value, None for none) is used up."""
    return deadline is not None and time.time() >= deadline


def _timeout_message(seconds: float) -> str:
    return f"the trial ran past its time limit of {seconds:g}s (faults.trial_timeout) and was stopped"


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TrialTimeoutError in the block once it has run `seconds` (None: no limit)."""
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        warnings.warn("faults.trial_timeout can only stop a trial in the main thread; from this thread a trial "
                      "that overruns is failed when it ends", RuntimeWarning, stacklevel=3)
        yield
        return

    def on_alarm(signum, frame):
        raise TrialTimeoutError(_timeout_message(seconds))

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay > 0:
            # Someone else's timer (pytest-timeout, a notebook's watchdog) was running: give it
            # back what is left of it, or let it fire at once if it is already due.
            remaining = max(outer_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, outer_interval)


def record_failure(trial, error: BaseException) -> None:
    """Keep why a trial failed with it (the report and `trials.csv` show it)."""
    trial.set_user_attr(FAIL_REASON_ATTR, f"{type(error).__name__}: {error}"[:500])


def check_finite(values: Sequence[float]) -> None:
    """Optuna would fail a NaN objective silently; say which objective it was."""
    bad = [f"{name}={value}" for name, value in zip(OBJECTIVES, values) if not math.isfinite(value)]
    if bad:
        raise FloatingPointError(f"the trial returned non-finite objectives: {', '.join(bad)}")


INTERRUPT_REASON = "interrupted: Ctrl-C (SIGINT) stopped the search during this trial; its candidate is queued again"


class _QuietInterrupts(logging.Filter):
    """Optuna logs a failed trial with its traceback. A Ctrl-C is not a failure of the trial: the
    search says so in one line, so Optuna's two lines about the interrupted trial are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {number} failed") for number in self.trials)


_QUIET_INTERRUPTS = _QuietInterrupts()


def _on_interrupt(trial) -> None:
    """Record why the trial stopped and queue its candidate again, silently: the CLI prints the one line."""
    from slimsearch.search.recovery import requeue

    _QUIET_INTERRUPTS.trials.add(trial.number)
    trial.set_user_attr(FAIL_REASON_ATTR, INTERRUPT_REASON)
    requeue(trial.study, trial.number, trial.params, trial.user_attrs, report=None)


def guard_objective(run: Callable, *, trial_timeout: float | None) -> Callable:
    """`run(trial)` under the time limit, with its objectives checked and any failure's reason recorded.

    Ctrl-C (KeyboardInterrupt) still stops the search, but the trial it interrupts is recorded
    with that reason and its candidate queued again, so the next session runs it first.
    """
    optimize_logger = logging.getLogger("optuna.study._optimize")
    if _QUIET_INTERRUPTS not in optimize_logger.filters:
        optimize_logger.addFilter(_QUIET_INTERRUPTS)

    def objective(trial):
        start = time.monotonic()
        try:
            with time_limit(trial_timeout):
                values = run(trial)
            if trial_timeout is not None and time.monotonic() - start > trial_timeout:
                # The timer fired but the trial swallowed the exception (or ran in another thread).
                raise TrialTimeoutError(_timeout_message(trial_timeout))
            check_finite(values)
            return values
        except (TrialTimeoutError, FloatingPointError) as error:
            # Recorded here, outside the timer: the alarm may have cut the trial's own recording short.
            record_failure(trial, error)
            raise
        except Exception as error:
            if FAIL_REASON_ATTR not in trial.user_attrs:  # the trial records its own failures; a fallback
                record_failure(trial, error)
            raise
        except KeyboardInterrupt:
            _on_interrupt(trial)
            raise

    return objective
