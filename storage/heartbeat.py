"""A heartbeat that survives database restarts.

Optuna's heartbeat thread calls `record_heartbeat` in a loop and dies at the first
exception, so a 0.4 s PostgreSQL restart used to end the beats of a healthy trial,
which was then failed as stale and run again elsewhere. Optuna offers no hook to
retry, so the storage's own `record_heartbeat` retries briefly and otherwise skips one
beat: the thread lives on, and only an outage longer than the grace period makes the
trial stale (as it should: the worker may be gone).
"""
from __future__ import annotations

import sys
import time

from optuna.storages import RDBStorage

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
