"""The trial loop of one worker slot: `run_slot` loads the study and the data once, then runs
trials until the study reaches its target, the timeout passes, or it is asked to stop. A
stop request interrupts the current trial, which is failed and re-queued so the next worker
resumes it from its last checkpoint. Which slots run, and their processes, is
search/supervisor.py; recovery of interrupted trials is search/recovery.py.
"""
from __future__ import annotations

import os
import signal
import time

import optuna
import torch
from optuna.trial import TrialState

from objectives.data import load_cifar10
from core.settings import WorkerOptions
from core.trials import (FAIL_REASON_ATTR, MACS_ATTR, PARAMS_ATTR, RECIPE_ATTR, REQUEUED_ATTR, SECONDS_ATTR, TEST_ACC_ATTR,
                         VAL_ACC_ATTR, accuracy_label, flip_averaged, is_infeasible, trained_trials)
from objectives.prepare import prepare_data
from storage.artifacts import RetryingStore, open_artifact_store
from storage.database import make_storage, quiet_optuna
from storage.errors import StoreUnavailable, transient_database_error
from storage.requeue import MAX_STALE_RETRIES, needs_retry, requeue
from storage.retry import DatabaseRetry, StoppedWaiting, StoreRetry
from storage.snapshot import worker_study_storage

from .definition import check_workable, load_study
from .objective import Objective, TrialFailed, WorkerStopping
from .progress import EpochPrinter, describe_config, plural
from .recovery import ended_elsewhere, recover_interrupted, requeue_trial, watch_stale_trials
from .threads import fit_threads_to_load


class StopFlag:
    """Set by the first SIGTERM/SIGINT; a second one exits at once. One stop often arrives
    twice (Slurm and Kubernetes signal every process of a job, and the job script or parent
    worker forwards it too), so a repeat within DUPLICATE_SECONDS counts as the same stop."""
    DUPLICATE_SECONDS = 2.0

    def __init__(self) -> None:
        self.set = False
        self.signum = 0
        self.at = 0.0

    def install(self) -> None:
        def handler(signum, frame):
            if self.set:
                if time.monotonic() - self.at < self.DUPLICATE_SECONDS:
                    return
                os._exit(128 + signum)
            self.set, self.signum, self.at = True, signum, time.monotonic()
            print(f"worker {os.getpid()}: {signal.Signals(signum).name}: stopping the trial in flight (it is "
                  f"re-queued and resumes from its last epoch); press Ctrl-C again to exit at once", flush=True)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def __call__(self) -> bool:
        return self.set


def _log_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    a = t.user_attrs
    if is_infeasible(t):
        what = f"infeasible ({a[PARAMS_ATTR]:,} params)"
    elif t.state == TrialState.FAIL:
        what = f"failed: {a.get(FAIL_REASON_ATTR) or 'see the log'}"
    else:
        value = t.value if t.state == TrialState.COMPLETE else (max(t.intermediate_values.values()) if t.intermediate_values else float('nan'))
        if TEST_ACC_ATTR in a:  # a final run's value is its test accuracy
            accuracy = accuracy_label("test", value, flip_averaged(a))
            if a.get(VAL_ACC_ATTR) is not None:
                accuracy = accuracy_label("val", a[VAL_ACC_ATTR], flip_averaged(a)) + ", " + accuracy
        else:
            accuracy = accuracy_label("val", value, flip_averaged(a))
        state = t.state.name.lower()
        if t.state == TrialState.PRUNED and t.intermediate_values:
            epochs = (a.get(RECIPE_ATTR) or {}).get("epochs")
            state += f" after epoch {max(t.intermediate_values)}" + (f" of {epochs}" if epochs else "")
        what = f"{state}, {accuracy}, {a.get(PARAMS_ATTR, 0):,} params, {a.get(SECONDS_ATTR, 0):.0f} s"
        config = describe_config(a)
        what += f" ({config})" if config else ""
    print(f"[{study.study_name}] trial {t.number}: {what}", flush=True)


def run_slot(opts: WorkerOptions, device: str, opened: tuple | None = None) -> int:
    """One worker process on one device. Returns the exit code. `opened`: the (storage, study,
    definition) that this process opened and checked already (`search worker` with one slot
    runs it in its own process), so the start-up work is not done twice."""
    quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # _log_trial says what each trial did
    stop = StopFlag()
    stop.install()
    db = DatabaseRetry(opts.db_wait, opts.study, should_stop=stop)
    if opened is not None:  # opened by the start-up checks, on the worker's view (search/api.py)
        storage, study, definition = opened
    else:
        try:
            storage = make_storage(opts.storage, heartbeat_interval=opts.heartbeat, grace_period=opts.grace,
                                   wait=opts.db_wait)
            # Its trial lists come from a cache whose refreshes do not grow with the trials
            # RUNNING (storage/snapshot.py): a fleet of workers keeps each ask well under a second.
            study, definition = db.call(load_study, worker_study_storage(storage), opts.study)
        except StoppedWaiting:
            return 0
        check_workable(definition)
    # Said before the seconds (a minute on a busy machine) of reading and splitting CIFAR-10.
    print(f"[{opts.study}] loading CIFAR-10 ({plural(definition.val_size, 'validation image')} held out, "
          f"seed {definition.seed})", flush=True)
    cifar = load_cifar10(opts.data_dir)
    data = prepare_data(cifar, definition.val_size, definition.seed, definition.train_limit)
    dev = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
    if busy := fit_threads_to_load(dev.type):
        print(f"[{opts.study}] {busy}", flush=True)
    data = data.to(dev)  # once per worker, not once per trial
    progress = EpochPrinter(opts.study, opts.quiet)
    # Every artifact read, write and delete rides out store faults for --store-wait.
    store_retry = StoreRetry(opts.store_wait, opts.study, should_stop=stop)
    store = RetryingStore(store_retry.call(db.call, open_artifact_store, opts.artifacts, study=study), store_retry)
    if definition.final is not None:  # a `search finalize` study: fixed configurations, tested at the end
        from .finalize.objective import FinalObjective
        objective = FinalObjective(definition, data, dev, store, opts.study,
                                   should_stop=stop, compile=opts.compile, on_epoch=progress, test=cifar.test,
                                   on_start=progress.started, checkpoint_every=opts.checkpoint_every)
    else:
        objective = Objective(definition, data, dev, store, opts.study, should_stop=stop, compile=opts.compile,
                              on_epoch=progress, on_start=progress.started, checkpoint_every=opts.checkpoint_every)
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    watch_stale_trials(study, opts.heartbeat, stop, opts.grace)
    hopeless = HopelessWatch(definition.budget, definition.max_macs)

    def target_reached() -> bool:
        return opts.n_trials is not None and db.call(trained_trials, study) >= opts.n_trials

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _log_trial(study, trial)
        if trial.state == TrialState.FAIL and trial.user_attrs.get(REQUEUED_ATTR):  # StartOver
            db.call(requeue, study, trial)
        if stop() or target_reached() or hopeless.after(study, trial, db):
            study.stop()

    try:
        while not stop():
            if target_reached():
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                study.optimize(objective, timeout=remaining, callbacks=[after_trial], catch=(TrialFailed,),
                               gc_after_trial=True)
                break
            except WorkerStopping:
                # The trial is FAIL now; queue it again exactly as a heartbeat-stale trial is,
                # so whoever runs it next resumes from its last epoch checkpoint.
                number = db.call(requeue_trial, study, storage, objective.current_trial_id)
                print(f"[{opts.study}] trial {number}: interrupted, re-queued to resume", flush=True)
                break
            except StoreUnavailable:
                # The store stayed away past --store-wait: the trial (failed with the reason) is
                # re-queued now, then the worker stops, transient (exit 75). With the database
                # away too, the stale-trial watch of any worker re-queues it later.
                number = db.call(recover_interrupted, study, storage, objective.current_trial_id,
                                 "artifact store unavailable mid-trial; re-queued")
                if number is not None:
                    print(f"[{opts.study}] trial {number}: cut off by the artifact store, re-queued to resume",
                          flush=True)
                raise
            except Exception as e:
                if transient_database_error(e) is None:
                    ended = db.call(ended_elsewhere, study, storage, objective.current_trial_id, e)
                    if ended is not None:
                        # Another process ended this worker's trial while it ran (the stale-trial
                        # rule, after heartbeats were lost to a database restart): its outcome stands,
                        # Optuna's tell of this worker's result was refused, and the trial's retry
                        # (made sure of here) resumes from its last checkpoint. This worker goes on.
                        print(f"[{opts.study}] trial {ended.number} was already ended by another worker "
                              f"({ended.state.name}); this worker's result is dropped, carrying on", flush=True)
                        if needs_retry(ended):
                            db.call(requeue, study, ended, None if ended.user_attrs.get(REQUEUED_ATTR)
                                    else MAX_STALE_RETRIES)
                        objective.current_trial_id = None
                        continue
                    raise
                # Lost database mid-trial: wait for it, then fail and re-queue the trial in
                # flight ourselves (resuming from its last checkpoint) rather than leave it
                # RUNNING until the grace period ends.
                db.failed(e)
                number = db.call(recover_interrupted, study, storage, objective.current_trial_id)
                if number is not None:
                    print(f"[{opts.study}] trial {number}: cut off by the database outage, re-queued to resume",
                          flush=True)
                objective.current_trial_id = None
        if hopeless.message:
            raise ValueError(hopeless.message)
        if deadline is not None and time.monotonic() >= deadline and not stop() and not target_reached():
            print(f"[{opts.study}] {timeout_line(db.call(trained_trials, study), opts.n_trials)}", flush=True)
    except StoppedWaiting:
        print(f"[{opts.study}] stopped while the database was unreachable; its trial is re-queued once "
              f"the database is back and the grace period has passed", flush=True)
    finally:
        stop.set = True  # ends the stale-trial watcher with this slot
    # Stopped by a signal: 128 + its number, as a shell reports a killed process, so a scheduler
    # (Slurm's requeue, a Job's restart) reads "interrupted, run me again", not "finished".
    return 128 + stop.signum if stop.signum else 0


def timeout_line(trained: int, target: int | None) -> str:
    """What a worker says when its --timeout, not its target, ended the search."""
    of = f" of {target}" if target is not None else ""
    return f"stopped by --timeout after {trained}{of} {'trial' if (target or trained) == 1 else 'trials'}"


HOPELESS_STREAK = 200  # infeasible samples in a row, with no feasible trial in the study, before giving up


class HopelessWatch:
    """Notices a study whose samples never fit the budget: constrained TPE steers towards
    smaller models within a few dozen samples when any fit, so a long streak in a study
    without one feasible trial means the budget is hopeless for this space."""

    def __init__(self, budget: int, max_macs: int | None = None):
        self.budget, self.max_macs, self.streak, self.message = budget, max_macs, 0, ""

    def after(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, db: DatabaseRetry) -> bool:
        if not is_infeasible(trial):
            self.streak = 0
            return False
        self.streak += 1
        if self.streak < HOPELESS_STREAK:
            return False
        done = db.call(study.get_trials, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if any(not is_infeasible(t) for t in done):
            self.streak = 0
            return False
        over = [t for t in done if is_infeasible(t)]
        smallest = min(t.user_attrs.get(PARAMS_ATTR, 0) for t in over)
        limits = f"{self.budget:,} parameters" + (f" or {self.max_macs:,} MACs" if self.max_macs else "")
        self.message = (f"study {study.study_name!r}: {self.streak} samples in a row over the budget of {limits} and "
                        f"none within it (smallest sampled: {smallest:,} parameters, "
                        f"{min(t.user_attrs.get(MACS_ATTR, 0) for t in over):,} MACs); "
                        f"stopping: raise the budget or narrow the space")
        return True


