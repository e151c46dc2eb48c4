"""`search report`: PNG plots a person reads at a glance, and a Markdown summary."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from .definition import StudyDefinition  # noqa: E402
from .status import summarize  # noqa: E402


def _feasible(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "infeasible" not in t.user_attrs and t.value is not None]


def plot_history(study, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    done = _feasible(study)
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    ax.scatter([t.number for t in pruned], [max(t.intermediate_values.values()) for t in pruned], s=14,
               color="0.65", label="pruned (best epoch so far)")
    ax.scatter([t.number for t in done], [t.value for t in done], s=18, color="tab:blue", label="complete")
    if done:
        best, xs, ys = 0.0, [], []
        for t in sorted(done, key=lambda t: t.number):
            best = max(best, t.value)
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="tab:red", label=f"best so far ({ys[-1]:.4f})")
    ax.set(xlabel="trial", ylabel="validation accuracy", title=f"{study.study_name}: best accuracy over trials")
    ax.xaxis.get_major_locator().set_params(integer=True)  # trial numbers, not 0.5 steps
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_accuracy_vs_params(study, budget: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    done = _feasible(study)
    over = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "infeasible" in t.user_attrs]
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
              if t.intermediate_values and "params" in t.user_attrs]
    ax.scatter([t.user_attrs["params"] / 1e6 for t in pruned], [max(t.intermediate_values.values()) for t in pruned],
               s=14, color="0.65", label=f"pruned, best epoch ({len(pruned)})")
    ax.scatter([t.user_attrs["params"] / 1e6 for t in done], [t.value for t in done], s=18, color="tab:blue",
               label=f"trained (complete) ({len(done)})")
    x_max = max(budget / 1e6 * 1.6, min(max((t.user_attrs["params"] for t in over), default=0) / 1e6, budget / 1e6 * 4))
    off_chart = sum(t.user_attrs["params"] / 1e6 > x_max for t in over)
    ax.scatter([t.user_attrs["params"] / 1e6 for t in over], [0] * len(over), marker="x", s=18, color="tab:red",
               label=f"over budget, not trained ({len(over)}" + (f", {off_chart} beyond the right edge)" if off_chart else ")"))
    ax.axvline(budget / 1e6, color="black", linestyle="--", label=f"budget {budget / 1e6:g}M")
    ax.set(xlabel="trainable parameters (millions)", ylabel="validation accuracy",
           title="accuracy vs parameter count")
    if over:
        ax.set_xlim(0, x_max)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_learning_curves(study, path: Path, top: int = 6) -> None:
    """The top trials by best reported accuracy, complete (solid) and pruned (dashed)."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
               if t.intermediate_values and "infeasible" not in t.user_attrs]
    best = sorted(trained, key=lambda t: -max(t.intermediate_values.values()))[:top]
    for t in best:
        steps = sorted(t.intermediate_values)
        pruned = t.state == TrialState.PRUNED
        ax.plot(steps, [t.intermediate_values[s] for s in steps], marker="o", markersize=3,
                linestyle="--" if pruned else "-",
                label=f"trial {t.number} ({max(t.intermediate_values.values()):.4f}{', pruned' if pruned else ''})")
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"learning curves of the top {len(best)} trials")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if best:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


MIN_TRIALS_FOR_IMPORTANCES = 10  # below this the ranking mostly reflects noise between a few trials


def importances_missing_reason(trained: int) -> str:
    if trained < MIN_TRIALS_FOR_IMPORTANCES:
        return (f"no importances: {trained} trained trials, they need at least {MIN_TRIALS_FOR_IMPORTANCES}\n"
                f"(with fewer, the ranking mostly reflects noise between a few trials)")
    return "no importances: the trained trials share no varied parameter"


def plot_importances(study, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    # Trained trials only: over-budget ones score 0 and would make "size" look all-important.
    # Pruned trials count with the best accuracy they reported: early stops are information too.
    trained = _feasible(study) + [
        optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                  value=max(t.intermediate_values.values()))
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    importances = {}
    if len(trained) >= MIN_TRIALS_FOR_IMPORTANCES:
        proxy = optuna.create_study(direction="maximize")
        proxy.add_trials(trained)
        try:
            with warnings.catch_warnings():
                # "few trials per value" warnings: the title gives the trial count instead.
                warnings.simplefilter("ignore")
                importances = optuna.importance.get_param_importances(proxy)
        except (ValueError, RuntimeError):
            importances = {}
    if importances:
        names = list(importances)[:15][::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.set(xlabel="importance (PED-ANOVA, Optuna's default)",
               title=f"hyperparameter importances ({len(trained)} trained trials)")
    else:
        ax.text(0.5, 0.5, importances_missing_reason(len(trained)), ha="center", va="center", wrap=True)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_summary(study, definition: StudyDefinition, path: Path, model_note: str | None = None) -> None:
    s = summarize(study)
    c = s["counts"]
    trials = study.get_trials(deepcopy=False)
    compute = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                  if t.datetime_start and t.datetime_complete and "infeasible" not in t.user_attrs)
    started = [t.datetime_start for t in trials if t.datetime_start]
    ended = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ended) - min(started)).total_seconds() if started and ended else 0.0
    lines = [f"# Study `{study.study_name}`", "",
             f"Budget {definition.budget:,} trainable parameters; {definition.epochs} epochs per trial; "
             f"validation split {definition.val_size:,} images (seed {definition.seed}); pruner {definition.pruner}.", "",
             "| state | trials |", "|---|---:|"]
    lines += [f"| {k} | {c[k]} |" for k in ("complete", "pruned", "infeasible", "fail", "running", "waiting")]
    lines += ["", f"Time spent: {wall / 3600:.2f} h wall clock, {compute / 3600:.2f} h of trial time"
              f" ({s['trials_per_hour'] or 0} trained trials per hour).", ""]
    b = s["best"]
    if b:
        stages = ", ".join(f"{bl}x{ch} (F{f}, K{k})" for bl, ch, f, k in b["stages"])
        r = b["recipe"]
        lines += [f"## Best trial: {b['trial']}", "",
                  f"- validation accuracy **{b['val_acc']:.4f}**",
                  f"- {b['params']:,} trainable parameters, {b['macs'] / 1e6:.1f} MMACs per image",
                  f"- stages (blocks x channels): {stages}; pool {b['pool_kernel']}",
                  f"- {r.get('optimizer')}, lr {r.get('lr', 0):.3g}, batch {r.get('batch_size')}, {r.get('schedule')}, "
                  f"{r.get('epochs')} epochs"] + ([f"- model: {model_note}"] if model_note else []) + [""]
    else:
        lines += ["## Best trial: none yet", ""]
    n_trained = len(_feasible(study)) + sum(bool(t.intermediate_values) for t in trials if t.state == TrialState.PRUNED)
    if n_trained < MIN_TRIALS_FOR_IMPORTANCES:
        lines += [importances_missing_reason(n_trained).replace("\n", " ") + ".", ""]
    lines += ["![best accuracy over trials](history.png)", "![accuracy vs parameters](accuracy_vs_params.png)",
              "![learning curves](learning_curves.png)", "![importances](importances.png)", ""]
    path.write_text("\n".join(lines))


def write_report(study: optuna.Study, definition: StudyDefinition, out: str | Path,
                 model_note: str | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "history.png", out / "accuracy_vs_params.png", out / "learning_curves.png",
             out / "importances.png", out / "summary.md"]
    plot_history(study, files[0])
    plot_accuracy_vs_params(study, definition.budget, files[1])
    plot_learning_curves(study, files[2])
    plot_importances(study, files[3])
    write_summary(study, definition, files[4], model_note)
    return files
