"""Finalize through the service vs the same training in one plain loop: what the study costs.

    python benchmarks/finalize_overhead.py --data-dir D [--train-limit 5000] [--val-size 1000]
        [--epochs 3] [--top 2] [--seeds 2] [--json OUT]

A small search study (tiny space, 2 epochs, 3 trials) is run with the real `search worker`;
`search finalize --top K --seeds N --epochs E` enqueues K x N runs, and the real `search
worker --study S.final` trains and tests them (one process; per-epoch resume checkpoints in
the artifact store, heartbeats, SQLite). Then the same K x N (architecture, recipe, seed)
runs are trained (and tested) in-process with `objectives.train.train`, no study at all. The difference
is the price of finalizing through the service (process start, data loading, checkpoints,
database writes, the test pass). CPU (or GPU) as found; one thread per process is advised
on a shared machine (OMP_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
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

from objectives import ArchConfig  # noqa: E402
from objectives.data import load_cifar10  # noqa: E402
from objectives.recipe import Recipe  # noqa: E402
from objectives.model import build  # noqa: E402
from objectives.inference import Classifier, evaluate  # noqa: E402
from objectives.prepare import prepare_data  # noqa: E402
from objectives.train import train  # noqa: E402
from core.trials import FIXED_RECIPE_ATTR, SEED_ATTR  # noqa: E402

SPACE = {
    "arch": {"num_stages": [2, 3], "blocks": [1, 1], "channels": [16, 32], "conv_kernels": [3], "skip_kernels": [1],
             "stem_kernels": [3], "stem_widths": [None], "stem_se_ratios": [0], "se_ratios": [0],
             "activations": ["relu"], "block_dropout": [0.0, 0.0], "head_dropout": [0.0, 0.0]},
    "recipe": {"optimizers": ["sgd_nesterov"], "batch_sizes": [128], "epochs": [2, 2], "crop_paddings": [2],
               "schedules": ["onecycle"], "cutouts": [0], "mixup_alphas": [0.0], "rotations": [0.0],
               "ema_decays": [0.0], "grad_clip_modes": ["none"], "lr": {"sgd_nesterov": [0.05, 0.2]}},
}


def run(*args: str, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "search"), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--top", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="finalize-bench-"))
    url = f"sqlite:///{tmp / 'search.db'}"
    env = dict(os.environ, SEARCH_DATA_DIR=args.data_dir, SEARCH_ARTIFACTS=str(tmp / "artifacts"), SEARCH_STORAGE=url)
    (tmp / "space.json").write_text(json.dumps(SPACE))
    run("create", "--study", "b", "--space", str(tmp / "space.json"), "--val-size", str(args.val_size),
        "--train-limit", str(args.train_limit), "--pruner", "none", env=env)
    search_s = run("worker", "--study", "b", "--gpus", "none", "--n-trials", "3", env=env)
    run("finalize", "--study", "b", "--top", str(args.top), "--seeds", str(args.seeds), "--epochs", str(args.epochs),
        env=env)
    service_s = run("worker", "--study", "b.final", "--gpus", "none", env=env)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    final = optuna.load_study(study_name="b.final", storage=url)
    runs = final.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in runs)
    data = prepare_data(load_cifar10(args.data_dir, download_missing=False), args.val_size, 0, args.train_limit)
    started = time.perf_counter()
    test = load_cifar10(args.data_dir, download_missing=False).test
    for t in runs:  # the same runs, no study: architecture, recipe and seed as the trial had them; tested once
        arch, recipe = ArchConfig.from_dict(t.user_attrs["architecture"]), Recipe.from_dict(t.user_attrs[FIXED_RECIPE_ATTR])
        result = train(arch, recipe, data, seed=t.user_attrs[SEED_ATTR])
        model = build(arch)
        model.load_state_dict(result.best_state)
        evaluate(Classifier(model, data.mean, data.std), test, tta=recipe.tta_flip)
    direct_s = time.perf_counter() - started
    result = {
        "device": "cpu", "threads": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg(),
        "train_images": len(data.train), "val_images": len(data.val), "epochs": args.epochs,
        "runs": len(runs), "search_phase_s": round(search_s, 1),
        "service_worker_wall_s": round(service_s, 1), "service_trial_s": round(trial_s, 1),
        "direct_train_and_test_s": round(direct_s, 1),
        "overhead_per_run_s": round((trial_s - direct_s) / max(1, len(runs)), 2),
        "startup_s": round(service_s - trial_s, 1),
        "final_results": final.user_attrs.get("final_results"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
