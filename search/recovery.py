"""Recovery of trials cut short: the stale-trial watch (dead peers' trials failed and
re-queued while this worker trains), and the worker's own recovery after an interrupt, an
outage or a trial another process ended first. Every path re-queues a trial once, however
many processes try (storage/requeue.py), so its retry resumes from its last checkpoint.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import optuna
from optuna.trial import TrialState

from core.trials import FAIL_REASON_ATTR, REQUEUED_ATTR, counts_as_trained
from storage.requeue import MAX_STALE_RETRIES, requeue, requeue_orphans

ORPHAN_LOOKBACK_GRACES = 20  # how far back (in grace periods) the watch looks for a FAIL left without its retry


def watch_stale_trials(study: optuna.Study, every: float, stop: Callable[[], bool], grace: float) -> threading.Thread:
    """Fail (and so re-queue) trials whose worker died, every `every` seconds. Optuna checks
    only when a trial starts, which leaves a dead peer's trial RUNNING for as long as this
    worker's current trial lasts; the storage makes sure only one worker fails it, and
    storage/requeue.py that it is re-queued once. Each round also re-queues a recent FAIL whose
    re-queue was cut off (the database went away between the two, or its worker died)."""
    def loop() -> None:
        while not stop():
            time.sleep(every)
            try:
                optuna.storages.fail_stale_trials(study)
                for number in requeue_orphans(study, within=ORPHAN_LOOKBACK_GRACES * grace):
                    print(f"[{study.study_name}] trial {number}: failed without its retry; re-queued", flush=True)
            except Exception as e:  # a database hiccup: the next round tries again, the main loop reports it
                print(f"[{study.study_name}] stale-trial check failed: {type(e).__name__}", flush=True)
    thread = threading.Thread(target=loop, name="stale-trial-watch", daemon=True)
    thread.start()
    return thread


def requeue_trial(study: optuna.Study, storage, trial_id: int) -> int:
    failed = storage.get_trial(trial_id)
    requeue(study, failed)  # once, however often this is retried (storage/requeue.py)
    return failed.number


def recover_interrupted(study: optuna.Study, storage, trial_id: int | None,
                         reason: str = "database outage mid-trial; re-queued") -> int | None:
    """After an outage cut a trial short: fail it (if still RUNNING) and queue its retry,
    unless that is done already. Safe to call again after a failure half-way, and from any
    number of processes at once: the trial gets one retry."""
    if trial_id is None:
        return None
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.RUNNING:
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
            storage.set_trial_user_attr(trial_id, REQUEUED_ATTR, True)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # a peer's stale-trial check failed it meanwhile (and re-queues it: requeue sees that)
        trial = storage.get_trial(trial_id)
    if trial.state != TrialState.FAIL or counts_as_trained(trial):
        return None
    limit = None if trial.user_attrs.get(REQUEUED_ATTR) else MAX_STALE_RETRIES  # as the stale-trial watch
    return trial.number if requeue(study, trial, limit) is not None else None


def ended_elsewhere(study: optuna.Study, storage, trial_id: int | None, error: BaseException):
    """The trial in flight, if `error` is Optuna refusing to record this worker's work on it
    because another process ended it first (the stale-trial rule); else None."""
    refused = isinstance(error, optuna.exceptions.UpdateFinishedTrialError) or (
        isinstance(error, ValueError) and str(error).startswith("Cannot tell a "))
    if trial_id is None or not refused:
        return None
    trial = storage.get_trial(trial_id)
    return trial if trial.state.is_finished() else None
