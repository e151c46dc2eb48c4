"""Share of over-budget configs among the first samples of the default space, per budget.

    python benchmarks/feasible_fraction.py [--budgets 250000,1000000,5000000] [--trials 50] [--json FILE]

Samples as a study does: `sample_arch(trial, space, budget)`, which narrows an over-budget
draw to fit (objectives/budget.py). Random sampling shows the space's own fraction; TPE
shows what the budget constraint teaches the sampler (infeasible trials carry `params -
budget` as an Optuna constraint, as in a real study; feasible ones get a dummy value, since
nothing is trained here). `--raw` samples without the budget, as before the fitting.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from objectives import count_params  # noqa: E402
from objectives.space import ArchSpace, sample_arch  # noqa: E402
from core.trials import BUDGET_CONSTRAINT  # noqa: E402


def run(sampler: optuna.samplers.BaseSampler, trials: int, budget: int, fit: bool) -> list[int]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    counts = []
    for _ in range(trials):
        trial = study.ask()
        params = count_params(sample_arch(trial, ArchSpace(), budget if fit else None))
        trial.set_constraint(BUDGET_CONSTRAINT, float(params - budget))
        counts.append(params)
        study.tell(trial, 0.5 if params <= budget else 0.0)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="250000,1000000,5000000")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--raw", action="store_true", help="sample without fitting to the budget (the old behaviour)")
    ap.add_argument("--json")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {"trials": args.trials, "fitted_to_budget": not args.raw, "results": []}
    print(f"{'budget':>10} {'sampler':>7} {'over budget':>12} {'median params / budget':>23}")
    for budget in (int(b) for b in args.budgets.split(",")):
        for name, sampler in (("random", optuna.samplers.RandomSampler(seed=0)),
                              ("tpe", optuna.samplers.TPESampler(seed=0))):
            counts = run(sampler, args.trials, budget, not args.raw)
            over = sum(c > budget for c in counts)
            row = {"budget": budget, "sampler": name, "over_budget": over, "over_budget_fraction": round(over / len(counts), 3),
                   "median_params_fraction_of_budget": round(statistics.median(counts) / budget, 3)}
            out["results"].append(row)
            print(f"{budget:>10,} {name:>7} {over:>4}/{len(counts)} ({row['over_budget_fraction']:>4.0%}) "
                  f"{row['median_params_fraction_of_budget']:>23.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
