"""`search report`: PNG plots a person reads at a glance, and a Markdown summary.

Optuna draws what it has a plot for (`optuna.visualization.matplotlib`): the optimization
history, the learning curves (intermediate values), the importances, and the Pareto front
(search/pareto.py). Here they get what this study needs on top: pruned trials in the history
(Optuna shows complete ones only), whole-number trial and epoch ticks, the top trials' curves
only (a curve per trial is unreadable past a few dozen). Accuracy against parameter count,
with the budget line and the over-budget samples counted, is drawn by hand: Optuna has no plot
of the value against a recorded attribute (`plot_slice` plots against sampled parameters).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from .definition import StudyDefinition  # noqa: E402
from .progress import plural  # noqa: E402
from .status import summarize  # noqa: E402
from core.trials import MODEL_ARTIFACT_ATTR, PARAMS_ATTR, STATE_NAMES, counts_as_trained, feasible_trials, is_infeasible  # noqa: E402

SIZE, DPI = (8, 4.5), 110


def save_optuna_plot(draw: Callable[[], "plt.Axes"], path: Path, title: str,
                     decorate: Callable[["plt.Axes"], None] | None = None, size=SIZE) -> None:
    """Draw with Optuna, add `decorate`, save. Optuna's plots switch the process-wide style to
    ggplot and warn (experimental API, few trials) through warnings and its logger: both are kept
    to this plot, so the hand-drawn ones and the command's output stay as they were."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with plt.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = draw()
            if decorate is not None:
                decorate(ax)
            ax.set_title("", loc="left")  # some of Optuna's titles sit on the left
            ax.set_title(title)
            fig = ax.figure
            fig.set_size_inches(*size)
            fig.savefig(path, dpi=DPI, bbox_inches="tight")
            plt.close(fig)
    finally:
        optuna.logging.set_verbosity(verbosity)


def relabel(ax: "plt.Axes", labels: dict[str, str]) -> None:
    """Rename the series Optuna labelled (its labels are generic: "Trial", "Best Value") and
    redraw the legend inside the axes."""
    for artist in [*ax.collections, *ax.get_lines()]:
        if artist.get_label() in labels:
            artist.set_label(labels[artist.get_label()])
    ax.legend(loc="best", fontsize=8)


def _best_reported(t: optuna.trial.FrozenTrial) -> float:
    return max(t.intermediate_values.values())


def _pruned_with_epochs(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if counts_as_trained(t)]


def plot_history(study: optuna.Study, path: Path) -> None:
    """Optuna's optimization history (complete trials, the best so far, over-budget samples in
    grey at 0), plus the pruned trials at the best epoch they reported."""
    pruned = _pruned_with_epochs(study)
    over = sum(is_infeasible(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def decorate(ax):
        ax.scatter([t.number for t in pruned], [_best_reported(t) for t in pruned], s=14, color="tab:orange",
                   label=f"pruned, best epoch ({len(pruned)})")
        for c in ax.collections:  # Optuna draws the over-budget samples unlabelled, in its infeasible grey
            if len(c.get_offsets()) and matplotlib.colors.same_color(c.get_facecolor()[0], "#cccccc"):
                c.set_label(f"over budget, not trained ({over})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers, not 0.5 steps
        relabel(ax, {"validation accuracy": "complete", "Best Value": "best so far"})

    save_optuna_plot(lambda: optuna_plots.plot_optimization_history(study, target_name="validation accuracy"),
                     path, f"{study.study_name}: best accuracy over trials", decorate)


def plot_accuracy_vs_params(study, budget: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    done = feasible_trials(study)
    over = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_infeasible(t)]
    pruned = [t for t in _pruned_with_epochs(study) if PARAMS_ATTR in t.user_attrs]
    ax.scatter([t.user_attrs[PARAMS_ATTR] / 1e6 for t in pruned], [_best_reported(t) for t in pruned],
               s=14, color="0.65", label=f"pruned, best epoch ({len(pruned)})")
    ax.scatter([t.user_attrs[PARAMS_ATTR] / 1e6 for t in done], [t.value for t in done], s=18, color="tab:blue",
               label=f"trained (complete) ({len(done)})")
    sizes = [t.user_attrs[PARAMS_ATTR] / 1e6 for t in over]
    x_max = max(budget / 1e6 * 1.6, min(max(sizes, default=0), budget / 1e6 * 4))
    off_chart = sum(s > x_max for s in sizes)
    ax.scatter(sizes, [0] * len(over), marker="x", s=18, color="tab:red",
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


def plot_learning_curves(study: optuna.Study, path: Path, top: int = 6) -> None:
    """Optuna's intermediate values of the top trials by best reported accuracy, complete (solid)
    and pruned (dashed), each labelled with its number and best accuracy."""
    trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
               if counts_as_trained(t) and t.intermediate_values]
    best = sorted(trained, key=lambda t: -_best_reported(t))[:top]
    shown = optuna.create_study(direction="maximize")  # in memory: Optuna plots a study's every trial
    shown.add_trials(best)

    def decorate(ax):
        for line, t in zip(ax.get_lines(), best):  # Optuna draws one line per trial, in order
            pruned = t.state == TrialState.PRUNED
            line.set_linestyle("--" if pruned else "-")
            line.set_label(f"trial {t.number} ({_best_reported(t):.4f}{', pruned' if pruned else ''})")
        ax.set(xlabel="epoch", ylabel="validation accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best:
            ax.legend(loc="best", fontsize=8)

    save_optuna_plot(lambda: optuna_plots.plot_intermediate_values(shown), path,
                     f"learning curves of the top {plural(len(best), 'trial')}", decorate)


MIN_TRIALS_FOR_IMPORTANCES = 10  # below this the ranking mostly reflects noise between a few trials


def importances_missing_reason(trained: int) -> str:
    if trained < MIN_TRIALS_FOR_IMPORTANCES:
        return (f"no importances: {plural(trained, 'trained trial')}, they need at least {MIN_TRIALS_FOR_IMPORTANCES}\n"
                f"(with fewer, the ranking mostly reflects noise between a few trials)")
    return "no importances: the trained trials share no varied parameter"


def _with_values(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trained trials that have an accuracy to rank, as complete trials: over-budget samples
    score 0 and would make "size" look all-important; a pruned trial counts with the best accuracy
    it reported (early stops are information too); a failed one has no accuracy."""
    return [optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                      value=t.value if t.state == TrialState.COMPLETE else _best_reported(t))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if counts_as_trained(t)]  # a pruned one counts once it reported an epoch


def plot_importances(study: optuna.Study, path: Path, top: int = 15) -> None:
    """Optuna's importances (PED-ANOVA, its default) of the `top` parameters, over the trained
    trials; below MIN_TRIALS_FOR_IMPORTANCES, or with nothing varied, a panel that says why
    (which Optuna does not: it draws empty axes)."""
    trained = _with_values(study)
    importances = {}
    if len(trained) >= MIN_TRIALS_FOR_IMPORTANCES:
        ranked = optuna.create_study(direction="maximize")  # in memory, of the trained trials alone
        ranked.add_trials(trained)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "few trials per value": the title gives the count
                importances = optuna.importance.get_param_importances(ranked)
        except (ValueError, RuntimeError):
            importances = {}
    if importances:
        names = list(importances)[:top]
        def decorate(ax):
            ax.set(xlabel="importance (PED-ANOVA, Optuna's default)", ylabel="")
            ax.get_legend().remove()  # one objective: the title says what it is

        save_optuna_plot(lambda: optuna_plots.plot_param_importances(ranked, params=names), path,
                         f"hyperparameter importances ({plural(len(trained), 'trained trial')})", decorate,
                         size=(8, max(4.0, 0.3 * len(names) + 1.5)))
        return
    fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI)
    ax.text(0.5, 0.5, importances_missing_reason(len(trained)), ha="center", va="center", wrap=True)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_summary(study, definition: StudyDefinition, path: Path, model_note: str | None = None) -> None:
    s = summarize(study, definition)
    c = s["counts"]
    trials = study.get_trials(deepcopy=False)
    compute = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                  if t.datetime_start and t.datetime_complete and not is_infeasible(t))
    started = [t.datetime_start for t in trials if t.datetime_start]
    ended = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ended) - min(started)).total_seconds() if started and ended else 0.0
    lines = [f"# Study `{study.study_name}`", "",
             f"Budget {definition.budget:,} trainable parameters; {plural(definition.epochs, 'epoch')} per trial; "
             f"validation split {definition.val_size:,} images (seed {definition.seed}); pruner {definition.pruner}.", "",
             "| state | trials |", "|---|---:|"]
    lines += [f"| {k} | {c[k]} |" for k in STATE_NAMES]
    lines += ["", f"Time spent: {wall / 3600:.2f} h wall clock, {compute / 3600:.2f} h of trial time"
              f" ({s['trials_per_hour'] or 0} trained trials per hour).", ""]
    b = s["best"]
    if b:
        stages = ", ".join(f"{bl}x{ch} {kind} (F{f}, K{k})" for bl, ch, f, k, kind in b["stages"])
        r = b["recipe"]
        flip = f"flip averaging {'on' if b['flip_averaging'] else 'off'}"
        lines += [f"## Best trial: {b['trial']} (chosen by {b['chosen_by']})", ""]
        if b["val_acc"] is not None:
            lines.append(f"- validation accuracy **{b['val_acc']:.4f}** ({flip})")
        if b["test_acc"] is not None:
            lines.append(f"- test accuracy **{b['test_acc']:.4f}** ({flip})")
        lines += [f"- {b['params']:,} trainable parameters, {b['macs'] / 1e6:.1f} MMACs per image",
                  f"- stages (blocks x channels): {stages}; pool {b['pool_kernel']}",
                  f"- {r.get('optimizer')}, lr {r.get('lr', 0):.3g}, batch {r.get('batch_size')}, {r.get('schedule')}, "
                  f"{plural(r.get('epochs') or 0, 'epoch')}"] + ([f"- model: {model_note}"] if model_note else []) + [""]
    else:
        lines += ["## Best trial: none yet", ""]
    n_trained = len(_with_values(study))
    if n_trained < MIN_TRIALS_FOR_IMPORTANCES:
        lines += [importances_missing_reason(n_trained).replace("\n", " ") + ".", ""]
    lines += ["![best accuracy over trials](history.png)", "![accuracy vs parameters](accuracy_vs_params.png)",
              "![learning curves](learning_curves.png)", "![importances](importances.png)", ""]
    path.write_text("\n".join(lines))


def write_report(study: optuna.Study, definition: StudyDefinition, out: str | Path,
                 model_note: str | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(exist_ok=True)  # in a folder that exists (core.options.output_folder checks it first)
    files = [out / "history.png", out / "accuracy_vs_params.png", out / "learning_curves.png",
             out / "importances.png", out / "summary.md"]
    plot_history(study, files[0])
    plot_accuracy_vs_params(study, definition.budget, files[1])
    plot_learning_curves(study, files[2])
    plot_importances(study, files[3])
    write_summary(study, definition, files[4], model_note)
    return files


def model_note(study: optuna.Study, trial: optuna.trial.FrozenTrial | None, flag: str | None = None) -> str | None:
    """Where `trial`'s model.pt lives, and whether the store still holds it (for reports)."""
    from optuna.artifacts.exceptions import ArtifactNotFound
    from storage.artifacts import open_artifact_store, resolve_artifact_location
    artifact = trial.user_attrs.get(MODEL_ARTIFACT_ATTR) if trial else None
    if not artifact:
        return None
    location = resolve_artifact_location(flag, study)
    try:
        store = open_artifact_store(flag, create=False, study=study)
        store.open_reader(artifact).close()
        found = "present"
    except (ValueError, FileNotFoundError, ArtifactNotFound):
        found = "MISSING"
    return f"`model.pt` ({artifact}) in {location}: {found} (`search export-best` writes it out)"
