"""Trials lost with their process: failed with a reason and queued again, so no candidate is dropped.

There are two ways to know that a RUNNING trial has lost its process, and one way to handle it.

- The run folder's own SQLite study is only ever used by processes holding the run lock (a
  driver and its `--jobs` children). A driver that takes the lock therefore knows that every
  RUNNING trial it finds is lost, and recovers it at once (`recover_orphans`).
- Any storage, and above all a shared server (PostgreSQL) with workers on many machines:
  every running trial writes a heartbeat each `faults.heartbeat_interval` seconds (Optuna's
  RDBStorage heartbeat thread). A trial silent for `faults.grace_period` seconds has lost its
  worker; Optuna's `fail_stale_trials` fails it (every worker runs it before each trial, and
  `recover_stale` between trials), `heartbeat_storage.HeartbeatStorage` records the reason,
  and the storage's `heartbeat_stale_trial_callback` (`stale_trial_callback`) queues it again.

Recovering = FAIL with user attr `fail_reason` ('interrupted: ...'), then the same candidate is
enqueued again with user attrs `retry_of` (the lost trial's number) and `retries` (how many times
this candidate was lost so far), and the retry re-evaluates it. This is Optuna's
RetryFailedTrialCallback pattern with our attr names and its `max_retry`: a candidate lost
MAX_RETRIES times is not queued again, as it may be what kills the workers (out of memory, a
crash in native code).
"""

from __future__ import annotations

import warnings
from typing import Callable

from slimsearch.search.origins import FINETUNE_SCALE_ATTR, ORIGIN_ATTR, RETRIED_ORIGIN_ATTR, RETRY, origin_of
from slimsearch.search.attrs import FAIL_REASON_ATTR

RETRY_OF_ATTR = "retry_of"
RETRIES_ATTR = "retries"
MAX_RETRIES = 2
ORPHAN_REASON = "interrupted: the process running this trial stopped before it finished"

Report = Callable[[str], None]


def recover_orphans(study, report: Report) -> None:
    """Every RUNNING trial is lost: only call this while holding the run lock on a run-folder study."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, ORPHAN_REASON)
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        _requeue(study, study._storage.get_trial(trial._trial_id), report)


def recover_stale(study) -> None:
    """Fail (and, through the storage's callback, queue again) the trials whose heartbeat stopped."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def stale_trial_callback(report: Report) -> Callable:
    """The storage's heartbeat_stale_trial_callback: Optuna has just failed `trial`; queue it again."""

    def on_stale_trial(study, trial) -> None:
        _requeue(study, trial, report)

    return on_stale_trial


def _requeue(study, trial, report: Report) -> None:
    requeue(study, trial.number, trial.params, trial.user_attrs, report)


def requeue(study, number: int, params: dict, user_attrs: dict, report: Report | None) -> None:
    """Queue trial `number`'s candidate again (its params), unless it has none or was lost too often;
    `report` (None: silently) says what happened."""
    reason = user_attrs.get(FAIL_REASON_ATTR, "interrupted")
    retries = user_attrs.get(RETRIES_ATTR, 0) + 1
    report = report or (lambda message: None)
    if not params:  # lost before its candidate was sampled: nothing to re-evaluate
        report(f"Trial {number} was {reason}; it is recorded as failed.")
    elif retries > MAX_RETRIES:
        report(f"Trial {number} was {reason}; it is recorded as failed. Its candidate was lost "
               f"{retries} times, so it is not queued again.")
    else:
        # The retry says it is one (origin `retry`) and keeps what the lost trial was, so a
        # warm-start point keeps its exemption from screening (search/fidelity.py) and a long
        # fine-tune its length.
        attrs = {RETRY_OF_ATTR: number, RETRIES_ATTR: retries, ORIGIN_ATTR: RETRY, RETRIED_ORIGIN_ATTR: origin_of(user_attrs)}
        if FINETUNE_SCALE_ATTR in user_attrs:
            attrs[FINETUNE_SCALE_ATTR] = user_attrs[FINETUNE_SCALE_ATTR]
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
        report(f"Trial {number} was {reason}; it is recorded as failed and its candidate is queued again.")
