"""Re-queueing a failed trial exactly once.

Optuna's RetryHeartbeatStaleTrialCallback adds a WAITING copy of a failed trial each time it
is called. Several parties may call it for one trial: the trial's own worker (stopped, or cut
off by an outage), every live worker's stale-trial watch, and a worker that retries a commit
whose answer it never got. Optuna offers no atomic "retry unless retried", so `requeue`
checks and adds under a lock held across processes (a PostgreSQL advisory lock, or a file
lock beside a SQLite file): whoever comes second sees the retry and does nothing.

A retry inherits the intermediate values its checkpoint covers, and no others: a retry that
starts over (no checkpoint) starts with an empty curve, so the pruner does not judge the
new run by the old one's later epochs (Optuna inherits all of them or none).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import threading
from typing import Iterator

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from core.trials import FAIL_REASON_ATTR, REQUEUED_ATTR, RESUME_CHECKPOINT_ATTR

MAX_STALE_RETRIES = 3  # a trial whose worker keeps dying (heartbeats stop) is retried this often
LOCK_NAMESPACE = 0x52534551  # first key of the advisory lock ("RSEQ"), the study id is the second
_thread_lock = threading.Lock()  # one re-queue at a time per process: it needs two connections


def backend(storage):
    """The RDBStorage behind Optuna's cache wrapper."""
    return getattr(storage, "_backend", storage)


def retry_history(trial: FrozenTrial) -> list[int]:
    return list(trial.system_attrs.get("retry_history", ()))


def retry_of(trials: list[FrozenTrial], number: int) -> FrozenTrial | None:
    """The trial that retries trial `number`, if any."""
    return next((t for t in trials if retry_history(t)[-1:] == [number]), None)


def all_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial, read from the database (Optuna's cache would miss a peer's new retry)."""
    return backend(study._storage).get_all_trials(study._study_id, deepcopy=False)


@contextlib.contextmanager
def requeue_lock(study: optuna.Study) -> Iterator[None]:
    """Held while a re-queue checks and adds: one at a time per study, across processes."""
    rdb = backend(study._storage)
    with _thread_lock:
        engine = getattr(rdb, "engine", None)
        if engine is None:  # in-memory storage: one process
            yield
        elif engine.dialect.name == "postgresql":
            # Released when the transaction ends, and by the server if this connection dies.
            with engine.connect() as c, c.begin():
                c.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:a, :b)"),
                          {"a": LOCK_NAMESPACE, "b": study._study_id})
                yield
        else:  # SQLite: one host, so a file lock beside the database serves
            path = engine.url.database
            if not path or path == ":memory:":
                yield
            else:
                with open(f"{path}.requeue-lock", "a") as f:
                    fcntl.flock(f, fcntl.LOCK_EX)
                    try:
                        yield
                    finally:
                        fcntl.flock(f, fcntl.LOCK_UN)


def requeue(study: optuna.Study, failed: FrozenTrial, max_retry: int | None = None) -> FrozenTrial | None:
    """Queue one retry of the FAIL trial `failed` unless one exists; returns the retry (new or
    found), None when `max_retry` retries were spent. Safe to call again after a failure
    half-way, from any number of processes."""
    with requeue_lock(study):
        trials = all_trials(study)
        existing = retry_of(trials, failed.number)
        if existing is not None:
            return existing
        history = retry_history(failed) + [failed.number]
        if max_retry is not None and len(history) > max_retry:
            return None
        ref = failed.user_attrs.get(RESUME_CHECKPOINT_ATTR)
        upto = ref.get("epoch", 0) if ref else 0
        study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
            user_attrs=failed.user_attrs,
            system_attrs={**failed.system_attrs, "failed_trial": failed.number, "retry_history": history},
            intermediate_values={step: v for step, v in failed.intermediate_values.items() if step <= upto}))
        return retry_of(all_trials(study), failed.number)


class RequeueOnce(RetryHeartbeatStaleTrialCallback):
    """Optuna's stale-trial callback (what `fail_stale_trials` calls for each trial it failed),
    re-queueing through `requeue`: once, with the curve its checkpoint covers."""

    def __init__(self, max_retry: int | None = MAX_STALE_RETRIES) -> None:
        super().__init__(max_retry=max_retry, inherit_intermediate_values=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        requeue(study, trial, self._max_retry)


def needs_retry(trial: FrozenTrial) -> bool:
    """A FAIL whose work is not over: its worker was lost (failed by the heartbeat rule, no
    reason) or said it re-queued it (stopped, cut off by an outage)."""
    return trial.state == TrialState.FAIL and (not trial.user_attrs.get(FAIL_REASON_ATTR)
                                               or bool(trial.user_attrs.get(REQUEUED_ATTR)))


def requeue_orphans(study: optuna.Study, within: float) -> list[int]:
    """Re-queue recent FAIL trials that need a retry and have none: their re-queue was cut off
    (the database went away between the FAIL and the retry, or the process that failed them
    died). Looks back `within` seconds only, so a long study costs one small query per call.
    Returns the numbers re-queued."""
    rdb = backend(study._storage)
    failed = rdb.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.FAIL,))
    since = dt.datetime.now() - dt.timedelta(seconds=within)
    candidates = [t for t in failed if needs_retry(t) and t.datetime_complete and t.datetime_complete >= since]
    if not candidates:
        return []
    trials = all_trials(study)
    done = []
    for t in candidates:
        if retry_of(trials, t.number) is None:
            # A worker's own re-queue has no limit (a preempted job resumes however often); a
            # heartbeat-failed trial, Optuna's rule: MAX_STALE_RETRIES.
            limit = None if t.user_attrs.get(REQUEUED_ATTR) else MAX_STALE_RETRIES
            if requeue(study, t, limit) is not None:
                done.append(t.number)
    return done
