"""A heartbeat that survives database restarts.

Optuna's heartbeat thread calls `record_heartbeat` in a loop and dies at the first
exception, so a 0.4 s PostgreSQL restart used to end the beats of a healthy trial,
which was then failed as stale and run again elsewhere. Optuna offers no hook to
retry, so the storage's own `record_heartbeat` retries briefly and otherwise skips one
beat: the thread lives on, and only an outage longer than the grace period makes the
trial stale (as it should: the worker may be gone).

The stale-trial check itself runs before every trial and in every worker's watch; Optuna's
reads every RUNNING trial with its heartbeat and compares in Python, so its cost grew with the
trials running. Ours asks the database for the stale ones only (same rule, the server's clock).
"""
from __future__ import annotations

import sys
import time
from datetime import timedelta

import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from .errors import reason

RETRY_SECONDS = 1.0


class RDBStorageWithSteadyHeartbeat(RDBStorage):
    def record_heartbeat(self, trial_id: int) -> None:
        # Retry for at most half an interval, so the next beat still comes on time.
        deadline = time.monotonic() + max(RETRY_SECONDS, (self.heartbeat_interval or 2) / 2)
        while True:
            try:
                super().record_heartbeat(trial_id)
                return
            except Exception as e:  # anything raised here would kill Optuna's thread
                if time.monotonic() + RETRY_SECONDS > deadline:
                    print(f"heartbeat of trial id {trial_id} skipped: {reason(e)}", file=sys.stderr, flush=True)
                    return
                time.sleep(RETRY_SECONDS)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna's rule (RDBStorage._get_stale_trial_ids): RUNNING, with a heartbeat older than
        # the grace period by the database's clock; a trial that never beat is left alone.
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        with _create_scoped_session(self.scoped_session, True) as session:
            now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
            rows = (session.query(trial.trial_id).join(beat, beat.trial_id == trial.trial_id)
                    .filter(trial.study_id == study_id, trial.state == TrialState.RUNNING,
                            beat.heartbeat < now - timedelta(seconds=grace)).all())
        return [r[0] for r in rows]
