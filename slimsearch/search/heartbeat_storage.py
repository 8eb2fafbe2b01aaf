"""An Optuna RDBStorage whose heartbeat-stale trials keep the reason they failed.

Optuna's `fail_stale_trials` (run by every worker before each trial, and by
`recovery.recover_stale`) asks `_get_stale_trial_ids` for the running trials whose heartbeat is
older than the grace period, then fails them. Once failed, a trial is read-only, so the reason
is written here, in between, whichever worker does the sweep. Imported only when a storage
with heartbeats is opened, so that `slimsearch --help` never imports Optuna.
"""

from __future__ import annotations

import contextlib

import optuna

from slimsearch.search.attrs import FAIL_REASON_ATTR

STALE_REASON = ("interrupted: its worker sent no heartbeat for {grace}s (the process was killed or its "
                "machine was lost)")


class HeartbeatStorage(optuna.storages.RDBStorage):
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        reason = STALE_REASON.format(grace=self.grace_period)
        for trial_id in stale:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # it just finished after all
                self.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
        return stale
