"""Workers: one process per GPU slot, each pulling trials from the shared study.

`run_worker` is the parent: it starts one child process per slot (CUDA_VISIBLE_DEVICES
set per child) and forwards SIGTERM/SIGINT to them. `run_slot` is one child: it loads
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
from dataclasses import dataclass

import optuna
import sqlalchemy
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from objectives.data import load_cifar10
from objectives.train import prepare_data
from storage.artifacts import open_artifact_store
from storage.database import make_storage, quiet_optuna

from .definition import load_study
from .objective import Objective, TrialFailed, WorkerStopping

DB_RETRY_SECONDS = (1, 2, 5, 10, 20, 30)  # back-off while the database is unreachable


@dataclass(frozen=True)
class WorkerOptions:
    study: str
    storage_url: str
    data_dir: str | None = None
    artifacts: str | None = None
    n_trials: int | None = None        # study-wide target of trained trials (None: no limit)
    timeout: float | None = None       # seconds this worker starts new trials for
    heartbeat: int = 20                # seconds between heartbeats of a running trial
    grace: int = 60                    # a trial silent this long is failed and retried
    db_wait: float = 60.0
    compile: bool = False              # torch.compile each trial's model (pays off only for long trials)


def trained_trials(study: optuna.Study) -> int:
    """Trials that cost training and ended: feasible COMPLETE, PRUNED, and FAIL with a reason
    (NaN, OOM). A killed or stopped worker's FAIL is not counted: its retry will be."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if t.state == TrialState.FAIL:
            n += bool(t.user_attrs.get("fail_reason")) and not t.user_attrs.get("requeued")
        else:
            n += "infeasible" not in t.user_attrs
    return n


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
            print(f"worker {os.getpid()}: {signal.Signals(signum).name}: stopping after cleanup", flush=True)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def __call__(self) -> bool:
        return self.set


def _log_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    a = t.user_attrs
    if "infeasible" in a:
        what = f"infeasible ({a['params']:,} params)"
    elif t.state == TrialState.FAIL:
        what = f"failed: {a.get('fail_reason') or 'see the log'}"
    else:
        value = t.value if t.state == TrialState.COMPLETE else (max(t.intermediate_values.values()) if t.intermediate_values else float('nan'))
        what = f"{t.state.name.lower()} val_acc {value:.4f}, {a.get('params', 0):,} params, {a.get('seconds', 0):.0f} s"
    print(f"[{study.study_name}] trial {t.number}: {what}", flush=True)


def watch_stale_trials(study: optuna.Study, every: float, stop: "StopFlag") -> threading.Thread:
    """Fail (and so re-queue) trials whose worker died, every `every` seconds. Optuna checks
    only when a trial starts, which leaves a dead peer's trial RUNNING for as long as this
    worker's current trial lasts; the storage makes sure only one worker re-queues it."""
    def loop() -> None:
        while not stop():
            time.sleep(every)
            try:
                optuna.storages.fail_stale_trials(study)
            except Exception as e:  # a database hiccup: the main loop reports those
                print(f"[{study.study_name}] stale-trial check failed: {type(e).__name__}", flush=True)
    thread = threading.Thread(target=loop, name="stale-trial-watch", daemon=True)
    thread.start()
    return thread


def run_slot(opts: WorkerOptions, device: str) -> int:
    """One worker process on one device. Returns the exit code."""
    quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # _log_trial says what each trial did
    stop = StopFlag()
    stop.install()
    storage = make_storage(opts.storage_url, heartbeat_interval=opts.heartbeat, grace_period=opts.grace, wait=opts.db_wait)
    study, definition = load_study(storage, opts.study)
    cifar = load_cifar10(opts.data_dir)
    data = prepare_data(cifar, definition.val_size, definition.seed, definition.train_limit)
    dev = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
    data = data.to(dev)  # once per worker, not once per trial
    objective = Objective(definition, data, dev, open_artifact_store(opts.artifacts, study=study), opts.study, should_stop=stop,
                          compile=opts.compile)
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    watch_stale_trials(study, opts.heartbeat, stop)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _log_trial(study, trial)
        if stop() or (opts.n_trials is not None and trained_trials(study) >= opts.n_trials):
            study.stop()

    failures = 0
    while not stop():
        if opts.n_trials is not None and trained_trials(study) >= opts.n_trials:
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
            failed = storage.get_trial(objective.current_trial_id)
            RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, failed)
            print(f"[{opts.study}] trial {failed.number}: interrupted, re-queued to resume", flush=True)
            break
        except Exception as e:
            if _requeued_elsewhere(study, storage, objective.current_trial_id):
                # A database outage killed Optuna's heartbeat thread, so a watchdog failed and
                # re-queued this worker's trial while it ran; the retry resumes from its last
                # checkpoint, and this worker moves on.
                print(f"[{opts.study}] the running trial was re-queued by a watchdog ({type(e).__name__}); "
                      f"carrying on", flush=True)
                continue
            cause = _caused_by(e, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                               optuna.exceptions.StorageInternalError)
            if cause is None:
                raise
            # Lost database: the trial in flight stops beating and is re-queued once the
            # database is back; wait for it and carry on.
            delay = DB_RETRY_SECONDS[min(failures, len(DB_RETRY_SECONDS) - 1)]
            failures += 1
            reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
            print(f"[{opts.study}] database error ({reason}); retrying in {delay} s", flush=True)
            time.sleep(delay)
    # Stopped by a signal: 128 + its number, as a shell reports a killed process, so a scheduler
    # (Slurm's requeue, a Job's restart) reads "interrupted, run me again", not "finished".
    return 128 + stop.signum if stop() else 0


def _requeued_elsewhere(study: optuna.Study, storage, trial_id: int | None) -> bool:
    if trial_id is None:
        return False
    try:
        number = storage.get_trial(trial_id).number
        return any(number in t.system_attrs.get("retry_history", ()) for t in study.get_trials(deepcopy=False))
    except Exception:  # the database is still away: the caller's back-off handles that
        return False


def _caused_by(error: BaseException, *types: type) -> BaseException | None:
    """The first exception of `types` in `error`'s chain (Optuna wraps driver errors, and a
    storage failure inside its trial bookkeeping can surface as an unrelated exception)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def slots(gpus: str, per_gpu: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES value per slot (None: a CPU slot)."""
    if gpus == "none":
        return [None] * per_gpu
    available = torch.cuda.device_count()
    if gpus == "all":
        ids = list(range(available))
    else:
        try:
            ids = [int(g) for g in gpus.split(",")]
        except ValueError:
            raise ValueError(f"--gpus: expected all, none or a list like 0,1; got {gpus!r}") from None
        missing = [g for g in ids if g >= available]
        if missing:
            raise ValueError(f"--gpus: no GPU {missing[0]} here ({available} visible)")
    if not ids:
        print("no GPU visible: running on the CPU", flush=True)
        return [None] * per_gpu
    return [str(g) for g in ids for _ in range(per_gpu)]


def run_worker(opts: WorkerOptions, gpus: str, per_gpu: int, child_args: list[str]) -> int:
    """Start one child per slot and wait for them; forwards SIGTERM/SIGINT."""
    if per_gpu < 1:
        raise ValueError(f"--per-gpu: must be >= 1, got {per_gpu}")
    plan = slots(gpus, per_gpu)
    if len(plan) == 1:  # one slot: run here, no child process to manage
        if plan[0] is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = plan[0]
        return run_slot(opts, "cpu" if plan[0] is None else "cuda")
    children = []
    cpu_slots = sum(p is None for p in plan)
    for visible in plan:
        env = dict(os.environ)
        if visible is None:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_slots))
        else:
            env["CUDA_VISIBLE_DEVICES"] = visible
        device = "cpu" if visible is None else "cuda"
        children.append(subprocess.Popen([sys.executable, "-m", "search", "worker", *child_args,
                                          "--slot-device", device], env=env))

    def forward(signum, frame):
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [c.wait() for c in children]
    return max(codes, key=abs)
