"""Supervision: which slots a worker runs (GPUs as its parent sees them, CPU processes within
its CPU affinity), one child process per slot (search/slot.py), and forwarding SIGTERM and
SIGINT to them. Each child runs the trial loop of search/worker.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from core.options import to_json
from core.settings import WORKER_OPTIONS_ENV, WorkerOptions

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
        import torch  # here, not at the top: checking --gpus from the CLI stays quick where GPUs are set
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


def run_worker(opts: WorkerOptions, plan: list[str | None], opened: tuple | None = None) -> int:
    """Start one child per slot of `plan` (`slots` of the options) and wait for them;
    forwards SIGTERM/SIGINT. One slot runs in this process, with what it `opened` already."""
    if opts.gpus != "none" and plan[0] is None:
        print("no GPU visible: running on the CPU", flush=True)
    if len(plan) == 1:  # one slot: run here, no child process to manage
        if plan[0] is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = plan[0]
        from .worker import run_slot
        return run_slot(opts, "cpu" if plan[0] is None else "cuda", opened)
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
