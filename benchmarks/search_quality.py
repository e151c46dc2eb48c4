"""Does the search beat design by hand at equal compute? The product, run end to end, on CIFAR-10.

    python benchmarks/search_quality.py --scale cpu [--data-dir D] [--json FILE]
    python benchmarks/search_quality.py --scale gpu [--data-dir D] [--json FILE]   # a GPU host

Protocol (the same at every scale, through the real CLI, workers and SQLite storage):
1. Two search arms run at the same time, each one `search run` worker with the same wall-clock
   `--timeout` (and, on a CPU, one thread each), so both get the same compute under the same load:
   (a) the default search: TPE + Hyperband over the default space, fitted to the run;
   (b) random sampling without pruning, over the same space.
2. Each arm's top configurations (by validation accuracy) are finalized: `search finalize
   --top K --seeds N --epochs E`; arm (a)'s finalize also trains (c) the baselines
   (`--baselines`: the seed presets with their published recipes and ResNet-20 with He et al.'s,
   narrowed to the budget), so every configuration trains under the same schedule, seeds and data.
3. The final runs are trained by ordinary `search worker`s, two at a time, and tested once.
4. Per arm: the winner (selected by final validation accuracy), its single-view test accuracy
   mean ± std over the seeds, its difference to the best baseline with Welch's 95% interval, and
   the Spearman correlation between search rank and final rank. JSON to --json.

The load average is recorded beside every phase's seconds: on a shared machine both arms see the
same load, but fewer trials fit into the timeout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search.baselines import compare  # noqa: E402
from search.finalize import select_winner, final_results  # noqa: E402
from core.trials import ARCHITECTURE_ATTR, RECIPE_ATTR, counts_as_trained, is_infeasible  # noqa: E402

REBUILD = REPO.parent / "shared" / "tools" / "cifar10_batches.py"
SEARCH = [sys.executable, "-m", "search"]


@dataclasses.dataclass(frozen=True)
class Scale:
    budget: int
    max_macs: int | None      # compute budget per image (--max-macs), for searched and hand designs alike
    train_limit: int | None   # training images of the search split (None: all 45,000)
    val_size: int
    search_epochs: int
    search_seconds: int       # wall-clock --timeout of each arm
    final_epochs: int
    top: int
    seeds: int
    gpus: str                 # the workers' --gpus
    threads: int | None       # OMP_NUM_THREADS per worker (None: torch's default)
    expected: str             # what a run costs, said before it starts


SCALES = {
    # 2 cores: two arms of 20 minutes side by side, one core each; then 27 final runs (2 + 2
    # searched configurations and 5 baselines, 3 seeds, 3 epochs on 10,000 images, each tested on
    # all 10,000 test images), two at a time. On a CPU the cost of a trial is its MACs: the default
    # space at 300k parameters also holds 150-230M-MAC models (20 images/s on one core, half an hour
    # per trial), so the study gets a compute budget too, 45M MACs, which keeps ResNet-20 as
    # published (40.8M) and a 3-epoch trial under 5 minutes on one core.
    "cpu": Scale(budget=300_000, max_macs=45_000_000, train_limit=10_000, val_size=2_000, search_epochs=3,
                 search_seconds=20 * 60, final_epochs=3, top=2, seeds=3, gpus="none", threads=1,
                 expected="about 70 minutes on 2 idle cores (20 min search, about 45 min final runs)"),
    # One GPU host: the product's real setting (5M, all 45,000 training images, 20-epoch trials). Both
    # arms share the GPU for 2 hours; then (3 + 3 + 5) x 3 = 33 final runs of 60 epochs. Unmeasured:
    # at about 6 s per epoch of a 5M ResNet on an H100 (bf16, data on the GPU), the final runs take about
    # 3.3 GPU-hours, two at a time on one GPU about 2.5 hours, so about 4.5 hours in all per H100.
    "gpu": Scale(budget=5_000_000, max_macs=None, train_limit=None, val_size=5_000, search_epochs=20, search_seconds=2 * 3600,
                 final_epochs=60, top=3, seeds=3, gpus="all", threads=None,
                 expected="about 4.5 hours on one H100 (estimate, not yet measured)"),
    # The protocol in a few minutes on small data: for checking the script, not for its figures.
    "smoke": Scale(budget=100_000, max_macs=20_000_000, train_limit=None, val_size=200, search_epochs=2, search_seconds=40,
                   final_epochs=1, top=2, seeds=2, gpus="none", threads=1, expected="about 3 minutes"),
}

ARMS = {
    "default": {"sampler": "tpe", "pruner": "hyperband", "what": "TPE + Hyperband over the default space (fitted)"},
    "random": {"sampler": "random", "pruner": "none", "what": "random sampling, no pruning, same space"},
}
BASELINE_ARM = "default"  # its finalize study trains the baselines once; both arms compare with them


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"load_1min": round(one, 2), "load_5min": round(five, 2), "load_15min": round(fifteen, 2)}


def prepare_data(data_dir: str | None) -> Path:
    if data_dir:
        return Path(data_dir)
    root = REPO / "benchmarks" / ".cache" / "cifar10-full"
    if not (root / "cifar-10-batches-py" / "test_batch").exists():
        if not REBUILD.exists():
            sys.exit(f"search_quality: no --data-dir and no {REBUILD} to rebuild CIFAR-10 from")
        subprocess.run([sys.executable, str(REBUILD), str(root)], check=True, stdout=subprocess.DEVNULL)
    return root


def run_arms(scale: Scale, env: dict[str, str], storages: dict[str, str], logs: Path) -> dict[str, dict[str, Any]]:
    """Both search arms at once, each `search run` with the same --timeout; their wall seconds."""
    procs, started = {}, {}
    for arm, how in ARMS.items():
        cmd = SEARCH + ["run", "--study", arm, "--storage", storages[arm], "--budget", str(scale.budget),
                        "--epochs", str(scale.search_epochs), "--val-size", str(scale.val_size),
                        "--sampler", how["sampler"], "--pruner", how["pruner"], "--timeout", str(scale.search_seconds),
                        "--gpus", scale.gpus, "--quiet"]
        if scale.train_limit:
            cmd += ["--train-limit", str(scale.train_limit)]
        if scale.max_macs:
            cmd += ["--max-macs", str(scale.max_macs)]
        started[arm] = time.perf_counter()
        procs[arm] = subprocess.Popen(cmd, env=env, stdout=(logs / f"{arm}.log").open("w"), stderr=subprocess.STDOUT)
    out = {}
    for arm, p in procs.items():
        if p.wait() != 0:
            sys.exit(f"search_quality: arm {arm} failed (exit {p.returncode}); see {logs / f'{arm}.log'}")
        out[arm] = {"search_seconds": round(time.perf_counter() - started[arm], 1), **load()}
    return out


def drain(studies: list[tuple[str, str]], env: dict[str, str], slots: int, logs: Path) -> None:
    """Train every waiting final run with `slots` workers at a time: a free slot starts a worker on
    the study with the most waiting runs per worker already on it, so no slot idles while work is
    left. A final study's worker exits once its queue is empty."""
    workers: dict[str, list[subprocess.Popen]] = {name: [] for _, name in studies}
    log = (logs / "final.log").open("a")
    while True:
        for name in workers:
            workers[name] = [p for p in workers[name] if p.poll() is None]
        waiting = {name: len(optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.WAITING,))) for storage, name in studies}
        busy = sum(len(w) for w in workers.values())
        if not busy and not any(waiting.values()):
            return
        if busy < slots and any(waiting.values()):
            storage, name = max(studies, key=lambda s: waiting[s[1]] / (1 + len(workers[s[1]])))
            workers[name].append(subprocess.Popen(SEARCH + ["worker", "--study", name, "--storage", storage, "--gpus",
                                                            env["SQ_GPUS"], "--quiet"],
                                                  env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(5)  # a new worker takes its first run before the queues are counted again


def arm_summary(arm: str, storage: str, searched: dict[str, Any], baselines: list[dict[str, Any]]) -> dict[str, Any]:
    study = optuna.load_study(study_name=arm, storage=storage)
    trials = study.get_trials(deepcopy=False)
    results = final_results(optuna.load_study(study_name=f"{arm}.final", storage=storage))
    configs = results["configurations"]
    winner = select_winner(configs, results["full_train"])  # as status and export-best --final choose
    by_number = {t.number: t for t in trials}
    states = {s.name.lower(): sum(t.state == s and not is_infeasible(t) for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    return {
        **ARMS[arm], **searched,
        "trials_trained": sum(counts_as_trained(t) for t in trials), "trials_by_state": states,
        "trials_infeasible": sum(is_infeasible(t) for t in trials),
        "configurations": [{**c, "architecture": by_number[c["source_trial"]].user_attrs[ARCHITECTURE_ATTR],
                            "recipe": by_number[c["source_trial"]].user_attrs[RECIPE_ATTR]} for c in configs],
        "winner_trial": results["winner"],
        "winner_test_acc_mean": winner and winner["single_view_mean"],
        "winner_test_acc_std": winner and _std(winner["single_view_accs"]),
        "vs_best_baseline": compare(winner, baselines),
        "rank_correlation_search_vs_final": results["rank_correlation"],
    }


def _std(values: list[float]) -> float:
    import statistics
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=tuple(SCALES), default="cpu")
    ap.add_argument("--data-dir", help="a folder holding cifar-10-batches-py (default: rebuilt from ../shared)")
    ap.add_argument("--workdir", help="where studies, checkpoints and logs go; an earlier run's folder resumes it "
                                      "(default: a new folder under benchmarks/.cache/)")
    ap.add_argument("--json", help="write the results here (default: benchmarks/results/search_quality_SCALE.json)")
    args = ap.parse_args()
    scale = SCALES[args.scale]
    out_file = Path(args.json or REPO / "benchmarks" / "results" / f"search_quality_{args.scale}.json")
    work = Path(args.workdir or REPO / "benchmarks" / ".cache" / f"search_quality_{args.scale}_{int(time.time())}")
    work.mkdir(parents=True, exist_ok=True)
    print(f"search_quality --scale {args.scale}: {scale.expected}; logs in {work}", flush=True)
    data = prepare_data(args.data_dir)
    env = dict(os.environ, SEARCH_DATA_DIR=str(data), SEARCH_ARTIFACTS=str(work / "artifacts"),
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", SQ_GPUS=scale.gpus)
    if scale.threads:
        env["OMP_NUM_THREADS"] = str(scale.threads)
    storages = {arm: f"sqlite:///{work / (arm + '.db')}" for arm in ARMS}
    started, load_before = time.perf_counter(), load()

    # Each phase leaves its mark, so a run stopped midway resumes with the same --workdir.
    marker = work / "searched.json"
    if marker.exists():
        searched = json.loads(marker.read_text())
    else:
        print(f"searching: {len(ARMS)} arms side by side, {scale.search_seconds} s each", flush=True)
        searched = run_arms(scale, env, storages, work)
        marker.write_text(json.dumps(searched))
    for arm in ARMS:
        cmd = SEARCH + ["finalize", "--study", arm, "--storage", storages[arm], "--top", str(scale.top),
                        "--seeds", str(scale.seeds), "--epochs", str(scale.final_epochs)]
        if arm == BASELINE_ARM:
            cmd.append("--baselines")
        done = subprocess.run(cmd, env=env, stdout=(work / "finalize.log").open("a"), stderr=subprocess.STDOUT)
        if done.returncode != 0:
            sys.exit(f"search_quality: finalize of arm {arm} failed; see {work / 'finalize.log'}")

    final_started, load_final = time.perf_counter(), load()
    print("final runs: the arms' top configurations and the baselines, two workers at a time", flush=True)
    slots = 2  # one per core on the 2-core CPU machine; on a GPU two processes keep it busy
    drain([(storages[arm], f"{arm}.final") for arm in ARMS], env, slots, work)
    final_seconds = time.perf_counter() - final_started

    base = final_results(optuna.load_study(study_name=f"{BASELINE_ARM}.final", storage=storages[BASELINE_ARM]))
    baselines = base["baselines"]
    result = {
        "benchmark": "search_quality", "scale": args.scale, "protocol": dataclasses.asdict(scale),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "device": "cuda" if scale.gpus != "none" else "cpu"},
        "load_at_start": load_before, "load_at_final_start": load_final, "load_at_end": load(),
        "final_seconds": round(final_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
        "arms": {arm: arm_summary(arm, storages[arm], searched[arm], baselines) for arm in ARMS},
        "baselines": [{k: b[k] for k in ("name", "params", "narrowed_from", "epochs", "seeds_done", "single_view_accs",
                                         "single_view_mean", "val_acc_mean")} for b in baselines],
        "baselines_over_budget": base["baselines_over_budget"],
        "workdir": str(work),
    }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    for arm, r in result["arms"].items():
        c = r["vs_best_baseline"]
        gain = (f"{c['difference'] * 100:+.2f} points vs {c['best_baseline']}" +
                (f", 95% CI [{c['interval']['low'] * 100:+.2f}, {c['interval']['high'] * 100:+.2f}]"
                 if c and c["interval"] else "")) if c else "no comparison"
        acc = (f"{r['winner_test_acc_mean']:.4f} ± {r['winner_test_acc_std']:.4f}"
               if r["winner_test_acc_mean"] is not None else "none finished")
        print(f"{arm:>8}: {r['trials_trained']} trials in {r['search_seconds']:.0f} s; winner test acc {acc}; {gain}")
    print(f"wrote {out_file} ({result['total_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
