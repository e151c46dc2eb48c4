"""Fraction of feasible (within-budget) configs among the first samples of the default space.

    python benchmarks/feasible_fraction.py [--budget 5000000] [--trials 200] [--json FILE]

Random sampling shows the space's own fraction; TPE shows what the budget constraint
teaches the sampler (infeasible trials carry `params - budget` as an Optuna constraint,
as in a real study; feasible ones get a dummy value, since nothing is trained here).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from objectives import count_params  # noqa: E402
from objectives.space import ArchSpace, sample_arch  # noqa: E402


def run(sampler: optuna.samplers.BaseSampler, trials: int, budget: int) -> list[bool]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    feasible = []
    for _ in range(trials):
        trial = study.ask()
        params = count_params(sample_arch(trial, ArchSpace()))
        trial.set_constraint("params_over_budget", float(params - budget))
        feasible.append(params <= budget)
        study.tell(trial, 0.5 if params <= budget else 0.0)
    return feasible


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=5_000_000)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {"budget": args.budget, "trials": args.trials}
    for name, sampler in (("random", optuna.samplers.RandomSampler(seed=0)), ("tpe", optuna.samplers.TPESampler(seed=0))):
        f = run(sampler, args.trials, args.budget)
        q = max(1, args.trials // 4)
        out[name] = {"feasible_fraction": round(sum(f) / len(f), 3),
                     "first_quarter": round(sum(f[:q]) / q, 3), "last_quarter": round(sum(f[-q:]) / q, 3)}
        print(f"{name:>6}: {sum(f)}/{len(f)} feasible ({sum(f) / len(f):.1%}); first {q}: {sum(f[:q]) / q:.0%}, "
              f"last {q}: {sum(f[-q:]) / q:.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
