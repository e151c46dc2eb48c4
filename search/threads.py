"""CPU threads for training and evaluation on a machine others are using too.

PyTorch runs each operation on all cores, and its threads wait for each other at the end of
every operation. When other work holds the cores (the load average at or above the CPU count),
a thread that is not scheduled stalls the others: the README demo's first trial took 574 s with
two threads at load 10 on 2 cores, 168 s with one at load 8, and the whole command 328 against
103 CPU seconds (benchmarks/results/demo_cpu.json).
So on a busy machine a CPU process uses one thread, unless OMP_NUM_THREADS says otherwise.
"""
from __future__ import annotations

import os


def busy_cpu_threads(cpus: int | None = None, load: float | None = None) -> int | None:
    """1 when the machine is busy (1-minute load average >= its CPUs) and OMP_NUM_THREADS is not
    set, else None (PyTorch's default: a thread per core)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if cpus is None:
        from .supervisor import available_cpus
        cpus = available_cpus()
    load = os.getloadavg()[0] if load is None else load
    return 1 if cpus > 1 and load >= cpus else None


def fit_threads_to_load(device: str) -> str | None:
    """On the CPU of a busy machine, train or evaluate with one thread; the line saying so, or None."""
    if device != "cpu":
        return None
    from .supervisor import available_cpus
    cpus, load = available_cpus(), os.getloadavg()[0]  # read once: the line says what decided
    threads = busy_cpu_threads(cpus, load)
    if threads is None:
        return None
    import torch
    torch.set_num_threads(threads)
    return (f"the CPUs are busy (load {load:.1f} on {cpus} CPUs): using {threads} thread "
            f"(threads wait on each other when other work holds the cores; OMP_NUM_THREADS overrides)")


def inference_device() -> str:
    """Where `evaluate`, `predict` and `export-best --evaluate` run, with threads fitted to the
    load. Silently: their stderr is progress and at most one error line."""
    from objectives.inference import default_device
    device = default_device()
    fit_threads_to_load(device)
    return device

