"""The live view of a running search: trials done, feasible count, best accuracy under budget,
front size and ETA. On a terminal it is a rich progress bar; elsewhere (CI logs, pipes) one
plain line per finished trial."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from slimsearch.search.fidelity import SCREEN_ATTR


class SearchProgress:
    def __init__(self, *, total: int, console: Console | None = None, quiet: bool = False):
        self.total = total
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self._progress = Progress(
            TextColumn("[bold]search"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
            TextColumn("feasible {task.fields[feasible]}"), TextColumn("best {task.fields[best]}"),
            TextColumn("front {task.fields[front]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, disable=not self.live,
        )
        self._task = self._progress.add_task("search", total=total, feasible=0, best="-", front=0)
        self._started = time.monotonic()

    def __enter__(self) -> SearchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def update(self, study, finished_trial=None) -> None:
        from slimsearch.reports.data import front_frame, trials_frame

        if self.quiet:  # nothing to show: the engine's bookkeeping between trials stays small
            return
        trials = trials_frame(study)
        done = int((trials["state"] == "complete").sum())
        feasible = trials[trials["feasible"] & trials["stopped_early"].isna()]
        best = f"{feasible['accuracy'].max():.2%}" if len(feasible) else "-"
        front_size = len(front_frame(study, trials))
        self._progress.update(self._task, completed=min(done, self.total), feasible=len(feasible), best=best,
                              front=front_size)
        if not self.live and not self.quiet and finished_trial is not None:
            self.console.print(_trial_line(finished_trial, done, self.total, len(feasible), best, front_size),
                               highlight=False, markup=False, soft_wrap=True)  # reasons quote user code


def _trial_line(trial, done: int, total: int, feasible: int, best: str, front: int) -> str:
    attrs = trial.user_attrs
    if trial.state.name != "COMPLETE":
        outcome = f"{trial.state.name.lower()}: {attrs.get('fail_reason', 'no reason recorded')}"
    else:
        accuracy, latency_ms, _ = trial.values
        screen = attrs.get(SCREEN_ATTR) or {}
        if attrs.get("stopped_early"):
            status = "screened out after a short fine-tune" if screen.get("promoted") is False else "stopped (over budget)"
        else:
            status = "feasible" if attrs.get("feasible") else "over budget"
        outcome = f"acc {accuracy:.2%}, {latency_ms:.3f} ms ({attrs.get('speedup', float('nan')):.2f}x), {status}"
    return (f"trial {trial.number:>3}: {outcome} | {done}/{total} done, {feasible} feasible, "
            f"best {best}, front {front}")
