"""The Pareto front by size: which trained trials no smaller trial beats.

A trial is on the front for a size measure (trainable parameters or MACs) when no other
feasible complete trial is at least as accurate and at most as large, and strictly better
in one of the two. Ties (the same size and accuracy) are all on the front. Optuna's own
multi-objective front needs a multi-objective study; a search study optimizes accuracy
alone, with size a recorded attribute, so the front is computed here from those records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

SIZES = {"params": "trainable parameters", "macs": "MACs per image"}


def feasible_trials(study_or_trials) -> list[FrozenTrial]:
    """Complete, within budget, with a value and a recorded size."""
    trials = (study_or_trials.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if isinstance(study_or_trials, optuna.Study) else study_or_trials)
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and "infeasible" not in t.user_attrs and "params" in t.user_attrs and "macs" in t.user_attrs]


def pareto_front(trials: list[FrozenTrial], size: str = "params") -> list[FrozenTrial]:
    """The non-dominated feasible trials (max accuracy, min `size`), smallest first."""
    if size not in SIZES:
        raise ValueError(f"size: one of {', '.join(SIZES)}, got {size!r}")
    ordered = sorted(feasible_trials(trials), key=lambda t: (t.user_attrs[size], -t.value, t.number))
    front, best_smaller = [], float("-inf")  # best accuracy among strictly smaller trials
    i = 0
    while i < len(ordered):  # one group of equal size at a time
        j = i
        while j < len(ordered) and ordered[j].user_attrs[size] == ordered[i].user_attrs[size]:
            j += 1
        top = ordered[i].value  # the group's best (sorted by accuracy within a size)
        if top > best_smaller:
            front += [t for t in ordered[i:j] if t.value == top]
            best_smaller = top
        i = j
    return front


def best_within(trials: list[FrozenTrial], max_params: int | None = None, max_macs: int | None = None
                ) -> FrozenTrial | None:
    """The most accurate feasible trial within the given size limits (earlier trial on ties)."""
    fits = [t for t in feasible_trials(trials)
            if (max_params is None or t.user_attrs["params"] <= max_params)
            and (max_macs is None or t.user_attrs["macs"] <= max_macs)]
    return max(fits, key=lambda t: (t.value, -t.number)) if fits else None


def front_rows(study: optuna.Study) -> dict[str, list[dict[str, Any]]]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {size: [{"trial": t.number, "val_acc": t.value, "params": t.user_attrs["params"], "macs": t.user_attrs["macs"],
                    "preset": t.user_attrs.get("preset")} for t in pareto_front(trials, size)] for size in SIZES}


def format_front(rows: dict[str, list[dict[str, Any]]], study_name: str) -> str:
    lines = []
    for size, front in rows.items():
        lines.append(f"study {study_name}: Pareto front, validation accuracy vs {SIZES[size]} "
                     f"({len(front)} trials)")
        lines.append(f"  {'trial':>5} {'val_acc':>8} {'params':>11} {'MMACs':>8}")
        for r in front:
            lines.append(f"  {r['trial']:>5} {r['val_acc']:>8.4f} {r['params']:>11,} {r['macs'] / 1e6:>8.1f}"
                         + (f"  ({r['preset']})" if r["preset"] else ""))
        if not front:
            lines.append("  (no completed trial within budget yet)")
    return "\n".join(lines)


def plot_front(study: optuna.Study, path: Path) -> None:
    """Two panels (accuracy vs params, vs MACs): every feasible trial, the front as a step line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    trials = feasible_trials(study)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for ax, (size, label) in zip(axes, SIZES.items()):
        scale = 1e6
        ax.scatter([t.user_attrs[size] / scale for t in trials], [t.value for t in trials], s=16, color="0.6",
                   label="feasible trials")
        front = pareto_front(trials, size)
        if front:
            ax.step([t.user_attrs[size] / scale for t in front], [t.value for t in front], where="post",
                    color="tab:red", marker="o", markersize=4, label=f"Pareto front ({len(front)})")
        ax.set(xlabel=f"{label} (millions)", ylabel="validation accuracy", title=f"accuracy vs {label}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(f"{study.study_name}: the best model at each size")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_front_section(study: optuna.Study, out: Path) -> list[Path]:
    """pareto.png, and the front as a table appended to the report's summary.md."""
    png = out / "pareto.png"
    plot_front(study, png)
    rows = front_rows(study)["params"]
    lines = ["", "## The best model at each size (Pareto front, validation accuracy vs parameters)", "",
             "| trial | val acc | params | MMACs |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['trial']} | {r['val_acc']:.4f} | {r['params']:,} | {r['macs'] / 1e6:.1f} |" for r in rows]
    lines += ["", "`search pareto` prints both fronts; `search export-best --max-params N` exports the best "
              "trial within N parameters.", "", "![Pareto front](pareto.png)", ""]
    with (out / "summary.md").open("a") as f:
        f.write("\n".join(lines))
    return [png]
