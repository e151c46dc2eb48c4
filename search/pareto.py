"""The Pareto front by size: which trained trials no smaller trial beats.

A trial is on the front for a size measure (trainable parameters or MACs) when no other
feasible complete trial is at least as accurate and at most as large, and strictly better
in one of the two. Ties (the same size and accuracy) are all on the front. A search study
optimizes accuracy alone, with size a recorded attribute, while Optuna's front
(`study.best_trials`, `plot_pareto_front`) needs a multi-objective study: so each front is
Optuna's, taken from a throwaway in-memory study of (size, accuracy) pairs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from .progress import plural
from core.trials import MACS_ATTR, PARAMS_ATTR, PRESET_ATTR, feasible_trials, flip_averaged

SIZES = {PARAMS_ATTR: "trainable parameters", MACS_ATTR: "MACs per image"}


def _size_study(trials: list[FrozenTrial], size: str) -> optuna.Study:
    """(size, accuracy) of each feasible trial as a two-objective study; its trial i is trials[i]."""
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trials([optuna.trial.create_trial(values=[t.user_attrs[size], t.value]) for t in trials])
    return study


def pareto_front(trials: list[FrozenTrial], size: str = PARAMS_ATTR) -> list[FrozenTrial]:
    """The non-dominated feasible trials (max accuracy, min `size`), smallest first."""
    if size not in SIZES:
        raise ValueError(f"size: one of {', '.join(SIZES)}, got {size!r}")
    feasible = feasible_trials(trials)
    front = [feasible[t.number] for t in _size_study(feasible, size).best_trials]
    return sorted(front, key=lambda t: (t.user_attrs[size], -t.value, t.number))


def front_rows(study: optuna.Study, sizes=tuple(SIZES)) -> dict[str, list[dict[str, Any]]]:
    trials = feasible_trials(study)
    return {size: [{"trial": t.number, "val_acc": t.value, "flip_averaging": flip_averaged(t.user_attrs),
                    "params": t.user_attrs[PARAMS_ATTR], "macs": t.user_attrs[MACS_ATTR],
                    "preset": t.user_attrs.get(PRESET_ATTR)}
                   for t in pareto_front(trials, size)] for size in sizes}


def format_front(rows: dict[str, list[dict[str, Any]]], study_name: str) -> str:
    lines = []
    for size, front in rows.items():
        lines.append(f"study {study_name}: Pareto front, validation accuracy vs {SIZES[size]} "
                     f"({plural(len(front), 'trial')}; flip: averaged with the mirror image, as the trial's recipe)")
        lines.append(f"  {'trial':>5} {'val acc':>8} {'flip':>4} {'params':>11} {'MMACs':>8}")
        for r in front:
            lines.append(f"  {r['trial']:>5} {r['val_acc']:>8.4f} {'on' if r['flip_averaging'] else 'off':>4} "
                         f"{r['params']:>11,} {r['macs'] / 1e6:>8.1f}"
                         + (f"  ({r['preset']})" if r["preset"] else ""))
        if not front:
            lines.append("  (no completed trial within budget yet)")
    return "\n".join(lines)


def plot_fronts(study: optuna.Study, out: Path) -> list[Path]:
    """Optuna's Pareto-front plot per size measure (pareto.png: parameters, pareto_macs.png: MACs):
    every feasible trial, the front in red."""
    from optuna.visualization.matplotlib import plot_pareto_front

    from .report import relabel, save_optuna_plot  # matplotlib: only the report draws
    trials = feasible_trials(study)
    paths = []
    for size, label in SIZES.items():
        path = out / ("pareto.png" if size == PARAMS_ATTR else f"pareto_{size}.png")
        by_size = _size_study(trials, size)
        front = len(by_size.best_trials)
        save_optuna_plot(lambda: plot_pareto_front(by_size, target_names=[label, "validation accuracy"]), path,
                         f"{study.study_name}: the best model at each size ({label})",
                         lambda ax: relabel(ax, {"Trial": "feasible trials", "Best Trial": f"Pareto front ({front})"}))
        paths.append(path)
    return paths


def write_front_section(study: optuna.Study, out: Path) -> list[Path]:
    """pareto.png and pareto_macs.png, and the front as a table appended to the report's summary.md."""
    pngs = plot_fronts(study, out)
    rows = front_rows(study, (PARAMS_ATTR,))[PARAMS_ATTR]
    lines = ["", "## The best model at each size (Pareto front, validation accuracy vs parameters)", "",
             "| trial | val acc | flip averaging | params | MMACs |", "|---:|---:|---|---:|---:|"]
    lines += [f"| {r['trial']} | {r['val_acc']:.4f} | {'on' if r['flip_averaging'] else 'off'} | {r['params']:,} | "
              f"{r['macs'] / 1e6:.1f} |" for r in rows]
    lines += ["", "`search pareto` prints both fronts; `search export-best --max-params N` exports the best "
              "trial within N parameters.", "", "![Pareto front, parameters](pareto.png)",
              "![Pareto front, MACs](pareto_macs.png)", ""]
    with (out / "summary.md").open("a") as f:
        f.write("\n".join(lines))
    return pngs
