"""README command (1), timed: from `search run` to the last line of `export-best --evaluate`.

    python benchmarks/demo_cpu.py --data-dir /tmp/cifar-full [--threads N] [--json FILE]

Runs the command exactly as README.md writes it (minus `scripts/bootstrap.sh`) in a fresh
temporary folder, with the data from --data-dir (a full CIFAR-10: `../shared/tools/
cifar10_batches.py DIR` rebuilds it). Records wall time, CPU time (user + system of the
commands), the load average before and after (other work on the machine inflates the wall
time), the trials by outcome and the test accuracy. With --json, the run is appended to the
file's list of runs.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers import readme_commands  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the commands (default: PyTorch's choice)")
    ap.add_argument("--drop-timeout", action="store_true",
                    help="run without the command's --timeout: on a loaded machine it would cut the search short, "
                         "and the CPU time of all its trials is what this measures")
    ap.add_argument("--json")
    args = ap.parse_args()
    steps = readme_commands()[0].split(" && ")[1:]  # without scripts/bootstrap.sh
    if args.drop_timeout:
        steps = [re.sub(r" --timeout \S+", "", step) for step in steps]
    env = dict(os.environ, SEARCH_DATA_DIR=str(Path(args.data_dir).resolve()), PYTHONUNBUFFERED="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    load_before = os.getloadavg()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / ".venv").symlink_to(REPO / ".venv")
        (Path(tmp) / "examples").symlink_to(REPO / "examples")
        start = time.perf_counter()
        walls = []
        for step in steps:
            t0 = time.perf_counter()
            proc = subprocess.run(step.split(), cwd=tmp, env=env, capture_output=True, text=True)
            walls.append(round(time.perf_counter() - t0, 1))
            out.append(proc.stdout)
            if proc.returncode != 0:
                sys.exit(f"{step}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = "".join(out)
    accuracy = float(re.search(r"test accuracy: ([0-9.]+) \(10,000 test images\)", text).group(1))
    run = {"command": " && ".join(steps), "wall_seconds": round(wall, 1), "wall_seconds_per_command": walls,
           "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "omp_num_threads": args.threads,
           "cpu_count": os.cpu_count(), "timeout_dropped": args.drop_timeout, "load_average_before": [round(x, 2) for x in load_before],
           "load_average_after": [round(x, 2) for x in os.getloadavg()],
           "trials": {s: len(re.findall(rf"^\[demo\] trial \d+: {s}", text, re.M)) for s in ("complete", "pruned", "failed")},
           "test_accuracy": accuracy, "trial_lines": re.findall(r"^\[demo\] trial \d+: .*$", text, re.M)}
    print(json.dumps(run, indent=2))
    if args.json:
        path = Path(args.json)
        runs = json.loads(path.read_text())["runs"] if path.exists() else []
        path.write_text(json.dumps({"benchmark": "demo_cpu", "runs": runs + [run]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
