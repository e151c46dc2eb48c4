"""Workers: one process per GPU slot, each pulling trials from the shared study.

`run_worker` is the parent: it starts one child process per slot (search/slot.py, with
CUDA_VISIBLE_DEVICES set per child) and forwards SIGTERM/SIGINT to them. `run_slot` is one child: it loads
the study and the data once, then runs trials until the study reaches its target, the
timeout passes, or it is asked to stop. A stop request interrupts the current trial,
which is failed and re-queued so the next worker resumes it from its last checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import torch
from optuna.trial import TrialState

from objectives.data import load_cifar10
from objectives.prepare import prepare_data
from storage.artifacts import RetryingStore, open_artifact_store
from storage.database import make_storage, quiet_optuna
from storage.errors import StoreUnavailable, transient_database_error

from .dbretry import DatabaseRetry, StoppedWaiting, StoreRetry
from .definition import load_study
from .objective import Objective, TrialFailed, WorkerStopping
from .options import to_json
from .progress import EpochPrinter, describe_config, plural
from .requeue import MAX_STALE_RETRIES, needs_retry, requeue, requeue_orphans
from .settings import WORKER_OPTIONS_ENV, WorkerOptions
from .threads import fit_threads_to_load
from .trials import (FAIL_REASON_ATTR, MACS_ATTR, PARAMS_ATTR, RECIPE_ATTR, REQUEUED_ATTR, SECONDS_ATTR, TEST_ACC_ATTR, VAL_ACC_ATTR,
                     accuracy_label, counts_as_trained, flip_averaged, is_infeasible, trained_trials)


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


def watch_stale_trials(study: optuna.Study, every: float, stop: "StopFlag", grace: float) -> threading.Thread:
    """Fail (and so re-queue) trials whose worker died, every `every` seconds. Optuna checks
    only when a trial starts, which leaves a dead peer's trial RUNNING for as long as this
    worker's current trial lasts; the storage makes sure only one worker fails it, and
    search/requeue.py that it is re-queued once. Each round also re-queues a recent FAIL whose
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


ORPHAN_LOOKBACK_GRACES = 20  # how far back (in grace periods) the watch looks for a FAIL left without its retry


def check_workable(definition) -> None:
    """Refuse, in one line, a study whose space has no model within its budget (a study
    created before `search create` checked that): its workers would sample forever."""
    from objectives.feasibility import check_space_fits
    check_space_fits(definition.space.arch, definition.budget)


def run_slot(opts: WorkerOptions, device: str) -> int:
    """One worker process on one device. Returns the exit code."""
    quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # _log_trial says what each trial did
    stop = StopFlag()
    stop.install()
    db = DatabaseRetry(opts.db_wait, opts.study, should_stop=stop)
    try:
        storage = make_storage(opts.storage, heartbeat_interval=opts.heartbeat, grace_period=opts.grace,
                               wait=opts.db_wait)
        study, definition = db.call(load_study, storage, opts.study)
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
        from .finalize import FinalObjective
        objective = FinalObjective(definition, data, dev, store, opts.study,
                                   should_stop=stop, compile=opts.compile, on_epoch=progress, test=cifar.test,
                                   on_start=progress.started)
    else:
        objective = Objective(definition, data, dev, store, opts.study, should_stop=stop,
                              compile=opts.compile, on_epoch=progress, on_start=progress.started)
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
                number = db.call(_requeue, study, storage, objective.current_trial_id)
                print(f"[{opts.study}] trial {number}: interrupted, re-queued to resume", flush=True)
                break
            except StoreUnavailable:
                # The store stayed away past --store-wait: the trial (failed with the reason) is
                # re-queued now, then the worker stops, transient (exit 75). With the database
                # away too, the stale-trial watch of any worker re-queues it later.
                number = db.call(_recover_interrupted, study, storage, objective.current_trial_id,
                                 "artifact store unavailable mid-trial; re-queued")
                if number is not None:
                    print(f"[{opts.study}] trial {number}: cut off by the artifact store, re-queued to resume",
                          flush=True)
                raise
            except Exception as e:
                if transient_database_error(e) is None:
                    ended = db.call(_ended_elsewhere, study, storage, objective.current_trial_id, e)
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
                number = db.call(_recover_interrupted, study, storage, objective.current_trial_id)
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


def _requeue(study: optuna.Study, storage, trial_id: int) -> int:
    failed = storage.get_trial(trial_id)
    requeue(study, failed)  # once, however often this is retried (search/requeue.py)
    return failed.number


def _recover_interrupted(study: optuna.Study, storage, trial_id: int | None,
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


def _ended_elsewhere(study: optuna.Study, storage, trial_id: int | None, error: BaseException):
    """The trial in flight, if `error` is Optuna refusing to record this worker's work on it
    because another process ended it first (the stale-trial rule); else None."""
    refused = isinstance(error, optuna.exceptions.UpdateFinishedTrialError) or (
        isinstance(error, ValueError) and str(error).startswith("Cannot tell a "))
    if trial_id is None or not refused:
        return None
    trial = storage.get_trial(trial_id)
    return trial if trial.state.is_finished() else None


MAX_SLOTS_PER_GPU = 8  # trials sharing one GPU: past this they only queue for it, each holding a CUDA context


def available_cpus() -> int:
    """CPUs this process may run on (its affinity: what Slurm or a container allows), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def visible_gpus(env: str | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process sees, each as the id a child's CUDA_VISIBLE_DEVICES must name to
    get that same GPU: the entries of our own CUDA_VISIBLE_DEVICES (indices or UUIDs, as Slurm,
    Kubernetes or the user set them), or 0..count-1 when it is unset. `count` is how many
    devices CUDA found (it stops at the first entry it cannot use); both default to this
    process's."""
    if env is None:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if count is None:
        count = torch.cuda.device_count()
    if env is None:
        return [str(i) for i in range(count)]
    return [g.strip() for g in env.split(",") if g.strip()][:count]


def slots(gpus: str, per_gpu: int, visible: list[str] | None = None) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES value per slot (None: a CPU slot). `gpus` numbers GPUs as this
    process sees them (0 is the first of `visible`, by default visible_gpus()); each slot gets
    the matching entry of `visible`, so a parent given GPUs 2,3 puts its children on 2 and 3."""
    if per_gpu < 1:
        raise ValueError(f"--per-gpu: must be >= 1, got {per_gpu}")
    if gpus == "none":
        return _cpu_slots(per_gpu)
    if gpus != "all":
        try:
            ids = [int(g) for g in gpus.split(",")]
        except ValueError:
            raise ValueError(f"--gpus: expected all, none or a list like 0,1; got {gpus!r}") from None
        if any(g < 0 for g in ids):
            raise ValueError(f"--gpus: GPU numbers start at 0, got {gpus!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"--gpus: a GPU is listed twice in {gpus!r} (use --per-gpu for more processes per GPU)")
    if visible is None:
        visible = visible_gpus()
    if gpus == "all":
        ids = list(range(len(visible)))
    else:
        missing = [g for g in ids if g >= len(visible)]
        if missing:
            raise ValueError(f"--gpus: no GPU {missing[0]} here ({len(visible)} visible)")
    if not ids:  # run_worker says so
        return _cpu_slots(per_gpu)
    if per_gpu > MAX_SLOTS_PER_GPU:
        raise ValueError(f"--per-gpu: at most {MAX_SLOTS_PER_GPU} processes per GPU, got {per_gpu}")
    return [visible[g] for g in ids for _ in range(per_gpu)]


def _cpu_slots(n: int) -> list[None]:
    cpus = available_cpus()
    if n > cpus:
        raise ValueError(f"--per-gpu: {n} CPU processes but this host runs {cpus} CPUs; use at most {cpus}")
    return [None] * n


def run_worker(opts: WorkerOptions) -> int:
    """Start one child per slot and wait for them; forwards SIGTERM/SIGINT."""
    plan = slots(opts.gpus, opts.per_gpu)
    if opts.gpus != "none" and plan[0] is None:
        print("no GPU visible: running on the CPU", flush=True)
    if len(plan) == 1:  # one slot: run here, no child process to manage
        if plan[0] is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = plan[0]
        return run_slot(opts, "cpu" if plan[0] is None else "cuda")
    children: list[subprocess.Popen] = []
    cpu_slots = sum(p is None for p in plan)

    def stop_children(signum: int) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    for visible in plan:
        env = dict(os.environ)
        if visible is None:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_slots))
        else:
            env["CUDA_VISIBLE_DEVICES"] = visible
        # The options travel whole, as JSON in the environment (not argv: `ps` would show the
        # storage URL's password); search/slot.py reads them back.
        env[WORKER_OPTIONS_ENV] = to_json(opts)
        device = "cpu" if visible is None else "cuda"
        # Own session: a terminal's Ctrl-C reaches the parent alone, which forwards it once (else
        # each child got it twice, from the terminal and from the parent, and exited at once).
        try:
            children.append(subprocess.Popen([sys.executable, "-m", "search.slot", device], env=env,
                                             start_new_session=True))
        except OSError as e:
            # Stop the slots already started (each re-queues its trial in flight), not leave them
            # running as orphans in their own sessions.
            stop_children(signal.SIGTERM)
            for c in children:
                c.wait()
            raise OSError(f"could not start worker slot {len(children) + 1} of {len(plan)} "
                          f"({e.strerror or e}); stopped the {len(children)} already started") from None

    signal.signal(signal.SIGTERM, lambda signum, frame: stop_children(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: stop_children(signum))
    codes = [c.wait() for c in children]
    return max(codes, key=abs)
