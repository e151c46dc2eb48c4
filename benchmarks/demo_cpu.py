"""README command (1), timed: from `search run` to the last line of `export-best --evaluate`.

    python benchmarks/demo_cpu.py --data-dir /tmp/cifar-full [--threads N] [--json FILE] [--command "..."]
                                  [--background-load N]

Runs the command exactly as README.md writes it (minus `scripts/bootstrap.sh`; or --command, to
try another setting) in a fresh temporary folder, with the data from --data-dir (a full
CIFAR-10: `../shared/tools/cifar10_batches.py DIR` rebuilds it). Records wall time, CPU time
(user + system of the commands), the seconds to the first line printed, the load average
before, during (sampled every few seconds: other work on the machine inflates the wall time)
and after, the trials by outcome, whether --timeout stopped the search, and the test accuracy.
With --json, the run is appended to the file's list of runs.

--background-load N starts N busy processes (one endless Python loop each, at normal
priority) before the commands and stops them after: a machine shared with other work, made
repeatable. N=8 on 2 cores gives a load average of 8-9 while the demo runs, the load a user
reported.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers import readme_commands  # noqa: E402

LOAD_EVERY_SECONDS = 5.0


class LoadSampler:
    """The 1-minute load average every LOAD_EVERY_SECONDS while the commands run."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.done.wait(LOAD_EVERY_SECONDS):
            self.samples.append(round(os.getloadavg()[0], 2))

    def __enter__(self) -> "LoadSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def summary(self) -> dict[str, float | None]:
        s = self.samples
        return {"min": min(s), "mean": round(sum(s) / len(s), 2), "max": max(s)} if s else {"min": None, "mean": None,
                                                                                              "max": None}


class BackgroundLoad:
    """N processes that each keep one CPU thread busy until the block ends."""

    def __init__(self, n: int) -> None:
        self.n, self.procs = n, []

    def __enter__(self) -> "BackgroundLoad":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def run_step(step: str, cwd: str, env: dict[str, str], started: float) -> tuple[str, float | None, int]:
    """The step's output, the seconds from `started` to its first line, and its exit code."""
    proc = subprocess.Popen(step.split(), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, lines = None, []
    for line in proc.stdout:
        if first is None:
            first = round(time.perf_counter() - started, 1)
        lines.append(line)
    return "".join(lines), first, proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the commands (default: PyTorch's choice)")
    ap.add_argument("--drop-timeout", action="store_true",
                    help="run without the command's --timeout: on a loaded machine it would cut the search short, "
                         "and the CPU time of all its trials is what this measures")
    ap.add_argument("--command", help="commands joined by ' && ' to time instead of README's (default: README's)")
    ap.add_argument("--note", help="a note stored with the run")
    ap.add_argument("--background-load", type=int, default=0, metavar="N",
                    help="run N busy processes beside the commands (a shared machine, made repeatable)")
    ap.add_argument("--json")
    args = ap.parse_args()
    command = args.command or readme_commands()[0]
    steps = [s for s in command.split(" && ") if not s.startswith("scripts/bootstrap.sh")]
    if args.drop_timeout:
        steps = [re.sub(r" --timeout \S+", "", step) for step in steps]
    env = dict(os.environ, SEARCH_DATA_DIR=str(Path(args.data_dir).resolve()), PYTHONUNBUFFERED="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out, walls, first_line = [], [], None
    with BackgroundLoad(args.background_load):
        if args.background_load:
            time.sleep(60)  # let the 1-minute load average see the busy processes before the start
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
            (Path(tmp) / ".venv").symlink_to(REPO / ".venv")
            (Path(tmp) / "examples").symlink_to(REPO / "examples")
            start = time.perf_counter()
            for step in steps:
                t0 = time.perf_counter()
                text, first, code = run_step(step, tmp, env, start)
                first_line = first_line if first_line is not None else first
                walls.append(round(time.perf_counter() - t0, 1))
                out.append(text)
                if code != 0:
                    sys.exit(f"{step}: exit {code}\n{text}")
            wall = time.perf_counter() - start
        # Before the busy processes are reaped, so their CPU time is not counted.
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = os.getloadavg()
    text = "".join(out)
    accuracy = float(re.search(r"test accuracy: ([0-9.]+) \(10,000 test images", text).group(1))
    stopped = re.search(r"stopped by --timeout after .*$", text, re.M)
    run = {"command": " && ".join(steps), "note": args.note, "wall_seconds": round(wall, 1),
           "wall_seconds_per_command": walls, "seconds_to_first_line": first_line,
           "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "omp_num_threads": args.threads,
           "cpu_count": os.cpu_count(), "timeout_dropped": args.drop_timeout,
           "load_average_before": [round(x, 2) for x in load_before],
           "load_average_during": load.summary(),
           "load_average_after": [round(x, 2) for x in load_after],
           "background_load": args.background_load,
           "one_thread_for_a_busy_cpu": "the CPUs are busy" in text,
           "trials": {s: len(re.findall(rf"^\[demo\] trial \d+: {s}", text, re.M)) for s in ("complete", "pruned", "failed")},
           "stopped_by_timeout": stopped.group(0) if stopped else None,
           "test_accuracy": accuracy, "trial_lines": re.findall(r"^\[demo\] trial \d+: .*$", text, re.M)}
    print(json.dumps(run, indent=2))
    if args.json:
        path = Path(args.json)
        runs = json.loads(path.read_text())["runs"] if path.exists() else []
        path.write_text(json.dumps({"benchmark": "demo_cpu", "runs": runs + [run]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
