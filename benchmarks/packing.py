"""Packing: trials per hour with 1, 2, 4 worker processes on one GPU.

    python benchmarks/packing.py --data-dir D [--per-gpu 1,2,4] [--trials 12] [--epochs 2] [--json OUT]

For each K, a fresh study (SQLite, pruner off) gets the same M trials enqueued: M
feasible configurations drawn at random (seeded) from the default space at the default
5M budget, i.e. the space's typical sizes and recipes. Then the real `search worker
--gpus all --per-gpu K --n-trials M` trains them (checkpoints, artifacts, heartbeats and
all). Trials per hour = trials trained / (last finish - first start), read from the
trials' own timestamps, so process start-up and data loading count only once per slot.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from objectives import count_params  # noqa: E402
from objectives.recipe import sample_recipe  # noqa: E402
from objectives.space import SearchSpace, sample_arch  # noqa: E402
from search.definition import StudyDefinition, create_study  # noqa: E402
from core.trials import SECONDS_ATTR, counts_as_trained  # noqa: E402


def typical_params(space: SearchSpace, budget: int, n: int, seed: int) -> list[dict]:
    """`n` feasible samples of the space (trial params, as enqueue_trial takes them)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    while len(out) < n:
        trial = probe.ask()
        arch = sample_arch(trial, space.arch)
        sample_recipe(trial, space.recipe)
        if count_params(arch) <= budget:
            out.append(dict(trial.params))
        probe.tell(trial, 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--per-gpu", default="1,2,4")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--budget", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-size", type=int, default=5_000)
    ap.add_argument("--gpus", default="all")
    ap.add_argument("--json")
    args = ap.parse_args()
    space = SearchSpace()
    space = dataclasses.replace(space, recipe=dataclasses.replace(space.recipe, epochs=(args.epochs, args.epochs)))
    definition = StudyDefinition(space=space, budget=args.budget, pruner="none", val_size=args.val_size)
    params = typical_params(space, args.budget, args.trials, args.seed)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="packing-"))
    for k in [int(x) for x in args.per_gpu.split(",")]:
        url = f"sqlite:///{work / f'pack{k}.db'}"
        study = create_study(optuna.storages.RDBStorage(url), f"pack{k}", definition)
        for p in params:
            study.enqueue_trial(p)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "search", "worker", "--study", f"pack{k}", "--storage", url,
                        "--data-dir", args.data_dir, "--artifacts", str(work / f"art{k}"), "--gpus", args.gpus,
                        "--per-gpu", str(k), "--n-trials", str(args.trials)],
                       check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"})
        wall = time.perf_counter() - t0
        trials = [t for t in optuna.load_study(study_name=f"pack{k}", storage=url).get_trials(deepcopy=False)
                  if t.datetime_complete is not None and counts_as_trained(t)]
        span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
        per_trial = [t.user_attrs.get(SECONDS_ATTR, 0.0) for t in trials]
        row = {"per_gpu": k, "trials": len(trials), "span_seconds": round(span, 1), "wall_seconds": round(wall, 1),
               "trials_per_hour": round(len(trials) / span * 3600, 1),
               "mean_trial_seconds": round(sum(per_trial) / len(per_trial), 1)}
        rows.append(row)
        print(f"per-gpu {k}: {row['trials']} trials in {span:.1f} s -> {row['trials_per_hour']:.0f} trials/h "
              f"(mean trial {row['mean_trial_seconds']} s, wall {wall:.1f} s)", flush=True)
    import torch
    best = max(rows, key=lambda r: r["trials_per_hour"])
    out = {"benchmark": "packing", "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "epochs": args.epochs, "budget": args.budget, "trial_params": params,
           "mean_params": round(sum(count_params(sample_arch(optuna.trial.FixedTrial(p), space.arch)) for p in params)
                                / len(params)),
           "results": rows, "best_per_gpu": best["per_gpu"]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "trial_params"}, indent=2))


if __name__ == "__main__":
    main()
