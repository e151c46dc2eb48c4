"""`search finalize`: the best configurations of a search, trained longer, several seeds each.

A search ranks candidates with short, pruned runs. Finalizing retrains its top-K feasible
configurations (by validation accuracy) with a longer schedule, N seeds each, and tests
them. The runs are trials of a companion study (`S.final`) with its own stored definition,
enqueued here and trained by the ordinary workers (`search worker --study S.final`), so
heartbeats, retries, resume-from-checkpoint and many GPUs or hosts work as in a search.

A final trial's value is its test accuracy; the study records, per configuration, the test
accuracy's mean and standard deviation over seeds and how the final ranking agrees with the
search's (Spearman's rank correlation). With baselines (search/baselines.py), hand designs are
trained beside them under the same schedule, seeds and data, and the results give the searched
winner's gain over the best of them with its confidence interval.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives import ArchConfig
from objectives.data import Split
from objectives.model import build
from objectives.recipe import Recipe
from objectives.space import arch_to_params
from objectives.inference import Classifier, evaluate

from . import baselines as hand
from .definition import DEFINITION_ATTR, StudyDefinition, StudyNotFound, create_study, load_study
from .objective import Objective
from core.settings import FINALIZE_SEEDS, FINALIZE_TOP
from core.trials import (ARCHITECTURE_ATTR, FINAL_ATTR, FIXED_ARCH_ATTR, FIXED_RECIPE_ATTR, MODEL_ARTIFACT_ATTR, PARAMS_ATTR,
                     PUBLISHED_ATTR, RECIPE_ATTR, SEED_ATTR, SINGLE_VIEW_TEST_ACC_ATTR, TEST_ACC_ATTR, UNUSED_ATTR,
                     VAL_ACC_ATTR, feasible_trials)

FINAL_SUFFIX = ".final"
EPOCHS_FACTOR = 5           # default final schedule: 5 x the search's epochs per trial
RESULTS_ATTR = "final_results"  # on the companion study: the summary below, kept current by the workers


def final_study_name(source: str) -> str:
    return source + FINAL_SUFFIX


def top_configurations(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best feasible complete trials by validation accuracy (earlier trial first on ties),
    one per distinct configuration: a design enqueued twice is finalized once."""
    trials = [t for t in feasible_trials(study) if ARCHITECTURE_ATTR in t.user_attrs and RECIPE_ATTR in t.user_attrs]
    seen, out = set(), []
    for t in sorted(trials, key=lambda t: (-t.value, t.number)):
        key = json.dumps([t.user_attrs[ARCHITECTURE_ATTR], t.user_attrs[RECIPE_ATTR]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t)
        if len(out) == k:
            break
    return out


def final_recipe(trial: FrozenTrial, epochs: int | None, search_epochs: int) -> dict[str, Any]:
    """The trial's recipe with the final schedule's epochs: `epochs` if given, else the published
    recipe's own epochs for an enqueued published design, else EPOCHS_FACTOR x the search's.
    A step schedule keeps its shape (its interval scales with the epochs); onecycle and
    cosine are defined as fractions of the run already."""
    recipe = trial.user_attrs[RECIPE_ATTR]
    if epochs is None:
        epochs = recipe["epochs"] if trial.user_attrs.get(PUBLISHED_ATTR) else EPOCHS_FACTOR * search_epochs
    return with_epochs(recipe, epochs)


def with_epochs(recipe: dict[str, Any], epochs: int) -> dict[str, Any]:
    """`recipe` stretched or shrunk to `epochs`, keeping the shape of its schedule."""
    recipe = dict(recipe)
    if recipe["schedule"] == "step":
        recipe["step_every_epochs"] = max(1, round(recipe["step_every_epochs"] * epochs / recipe["epochs"]))
    recipe["epochs"] = epochs
    return Recipe.from_dict(recipe).to_dict()  # validated


def finalize(storage, source: str, top: int = FINALIZE_TOP, epochs: int | None = None, seeds: int = FINALIZE_SEEDS,
             full_train: bool = False, name: str | None = None, baselines: list[str] | None = None
             ) -> tuple[optuna.Study, list[dict[str, Any]]]:
    """Create (or re-open) the companion study and enqueue the runs it lacks; returns the
    study and the runs enqueued now (empty when all were enqueued before). `baselines`: hand
    designs (presets with a published recipe) to train beside them, under the same final
    schedule (epochs), seeds and data."""
    if top < 1 or seeds < 1 or (epochs is not None and epochs < 1):
        raise ValueError("--top, --seeds and --epochs must be positive")
    study, definition = load_study(storage, source)
    if definition.final is not None:
        raise ValueError(f"study {source!r} is itself a finalize study (of {definition.final['source']!r})")
    chosen = top_configurations(study, top)
    if not chosen:
        raise ValueError(f"study {source!r} has no completed trial within budget yet: nothing to finalize")
    final_epochs = epochs or EPOCHS_FACTOR * definition.epochs
    planned = hand.plan(baselines or [], definition.space.arch.channels, definition.budget, definition.max_macs)
    trainable = [b for b in planned if b.arch is not None]
    if baselines and not trainable:
        macs = f" and {definition.max_macs:,} MACs" if definition.max_macs else ""
        raise ValueError(f"no baseline fits the budget of {definition.budget:,} parameters{macs}, even narrowed")
    space = definition.space
    space = dataclasses.replace(space, recipe=dataclasses.replace(space.recipe, epochs=(final_epochs, final_epochs)))
    final_def = dataclasses.replace(
        definition, space=space, val_size=0 if full_train else definition.val_size, pruner="none", sampler="random",
        final={"source": source, "top": top, "seeds": seeds, "epochs": epochs, "full_train": full_train,
               # the configurations are part of the definition: finalizing again after the
               # search has moved on is a new companion study, not a silent mix of two
               "source_trials": [t.number for t in chosen],
               **({"baselines": [{"name": b.name, "params": b.params, "published_params": b.published_params}
                                 for b in trainable],
                   "baselines_over_budget": [b.name for b in planned if b.arch is None]} if baselines else {})})
    name = name or final_study_name(source)
    try:
        final = create_study(storage, name, final_def)
    except ValueError as e:
        if "different definition" not in str(e):
            raise
        raise ValueError(f"study {name!r} holds a finalize of other options or other top trials (the search has "
                         f"moved on?); pass --final-study NEW_NAME to finalize again") from None
    present = {_run_key(t.user_attrs[FINAL_ATTR]) for t in final.get_trials(deepcopy=False) if FINAL_ATTR in t.user_attrs}
    enqueued = []
    for rank, t in enumerate(chosen, start=1):
        recipe = final_recipe(t, epochs, definition.epochs)
        params = arch_to_params(ArchConfig.from_dict(t.user_attrs[ARCHITECTURE_ATTR]), definition.space.arch)
        for i in range(seeds):
            if (t.number, i) in present:
                continue
            origin = {"source_study": source, "source_trial": t.number, "search_rank": rank,
                      "search_val_acc": t.value, "seed_index": i, "published_recipe": t.user_attrs.get(PUBLISHED_ATTR)}
            final.enqueue_trial(params, user_attrs={FIXED_RECIPE_ATTR: recipe, SEED_ATTR: definition.seed + i,
                                                    FINAL_ATTR: origin, PARAMS_ATTR: t.user_attrs[PARAMS_ATTR]})
            enqueued.append({**origin, "epochs": recipe["epochs"]})
    for b in trainable:
        recipe = Recipe.from_dict(with_epochs(b.recipe, final_epochs)).to_dict()
        for i in range(seeds):
            origin = {"source_study": source, "source_trial": None, "baseline": b.name, "search_rank": None,
                      "search_val_acc": None, "seed_index": i, "published_recipe": b.name,
                      "narrowed_from": b.published_params if b.narrowed else None}
            if _run_key(origin) in present:
                continue
            final.enqueue_trial({}, user_attrs={FIXED_RECIPE_ATTR: recipe, FIXED_ARCH_ATTR: b.arch.to_dict(),
                                                SEED_ATTR: definition.seed + i, FINAL_ATTR: origin,
                                                PARAMS_ATTR: b.params})
            enqueued.append({**origin, "epochs": recipe["epochs"]})
    return final, enqueued


def _run_key(origin: dict[str, Any]) -> tuple[Any, int]:
    """One final run: its configuration (a search trial's number, or a baseline's name) and seed."""
    return origin.get("baseline") or origin["source_trial"], origin["seed_index"]


class FinalObjective(Objective):
    """Trains the fixed configuration an enqueued final trial carries, then tests it.

    The run's kept weights are its best validation epoch, or its last epoch when it trains
    on all 50,000 images (no validation split); the test set only measures them."""

    def __init__(self, *args, test: Split, **kwargs):
        super().__init__(*args, **kwargs)
        self.test = Split(test.images.to(self.device), test.labels.to(self.device))
        self._test_acc: float | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        if FINAL_ATTR not in trial.user_attrs:
            # Optuna makes a new trial when the queue is empty: nothing is left to finalize.
            trial.set_user_attr(UNUSED_ATTR, "no configuration left to finalize when this worker asked")
            trial.study.stop()
            raise optuna.TrialPruned("nothing left to finalize")
        self._test_acc = None
        value = super().__call__(trial)
        trial.study.set_user_attr(RESULTS_ATTR, final_results(trial.study))
        if not trial.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial.study.stop()  # the queue is done: do not let Optuna sample a new trial
        return value

    def completed_metrics(self, trial: optuna.Trial, arch, result) -> dict[str, Any]:
        recipe = Recipe.from_dict(trial.user_attrs[FIXED_RECIPE_ATTR])
        model = build(arch).to(self.device)
        model.load_state_dict(result.best_state)
        ev = evaluate(Classifier(model, self.data.mean, self.data.std).to(self.device), self.test, self.device,
                      tta=recipe.tta_flip)
        self._test_acc = ev.accuracy
        val_acc = result.best_val_acc if len(self.data.val) else None
        trial.set_user_attr(SINGLE_VIEW_TEST_ACC_ATTR, ev.single_view_accuracy)
        trial.set_user_attr(TEST_ACC_ATTR, ev.accuracy)
        trial.set_user_attr(VAL_ACC_ATTR, val_acc)
        return {"test_acc": ev.accuracy, "test_acc_single_view": ev.single_view_accuracy, "test_tta_flip": recipe.tta_flip,
                "test_images": len(self.test), "val_acc": val_acc}

    def model_info(self, trial: optuna.Trial) -> dict[str, Any]:
        origin = trial.user_attrs[FINAL_ATTR]
        recipe = trial.user_attrs[FIXED_RECIPE_ATTR]
        return {"final": {**origin, "seed": trial.user_attrs[SEED_ATTR],
                          "training": {"epochs": recipe["epochs"], "train_images": len(self.data.train),
                                       "full_train": not len(self.data.val), "val_images": len(self.data.val)}}}

    def trial_value(self, trial: optuna.Trial, result) -> float:
        if self._test_acc is None:
            raise RuntimeError("a completed final run has no test accuracy")
        return self._test_acc


# ---- results ------------------------------------------------------------------------------

def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation with average ranks for ties; None when undefined (fewer than
    2 points, or a constant), where scipy.stats.spearmanr would warn and answer nan."""
    if len(x) < 2:
        return None

    def ranks(v: list[float]) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for value in np.unique(v):  # ties share the mean of their ranks
            r[v == value] = r[v == value].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    """Final trials with a test accuracy, one per (configuration, seed). A RUNNING one with a
    test accuracy is the caller's own run, finished but not yet marked complete."""
    latest: dict[tuple[int, int], FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        origin = t.user_attrs.get(FINAL_ATTR)
        if origin and t.user_attrs.get(TEST_ACC_ATTR) is not None:
            key = _run_key(origin)
            if key not in latest or t.number > latest[key].number:
                latest[key] = t
    return list(latest.values())


def _row(runs: list[FrozenTrial]) -> dict[str, Any]:
    """One configuration's final runs, summarised (searched and baseline rows alike)."""
    origin = runs[0].user_attrs[FINAL_ATTR]
    tests = [r.user_attrs[TEST_ACC_ATTR] for r in runs]
    # runs recorded before the single-view figure existed: their test accuracy, which is single view
    # unless the recipe flipped (then the comparison is on that figure, flipped; only older studies)
    singles = [r.user_attrs.get(SINGLE_VIEW_TEST_ACC_ATTR, r.user_attrs[TEST_ACC_ATTR]) for r in runs]
    vals = [r.user_attrs[VAL_ACC_ATTR] for r in runs if r.user_attrs.get(VAL_ACC_ATTR) is not None]
    recipe = runs[0].user_attrs[FIXED_RECIPE_ATTR]
    return {
        "source_trial": origin["source_trial"], "search_rank": origin["search_rank"],
        "search_val_acc": origin["search_val_acc"], "published_recipe": origin.get("published_recipe"),
        "params": runs[0].user_attrs.get(PARAMS_ATTR), "epochs": recipe["epochs"], "tta_flip": recipe.get("tta_flip", False),
        "seeds_done": len(runs),
        "test_acc_mean": statistics.fmean(tests), "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "single_view_accs": singles, "single_view_mean": statistics.fmean(singles),
        "val_acc_mean": statistics.fmean(vals) if vals else None,
        "trials": sorted(r.number for r in runs)}


def final_results(study: optuna.Study, definition: StudyDefinition | None = None) -> dict[str, Any]:
    definition = definition or StudyDefinition.from_dict(study.user_attrs[DEFINITION_ATTR])
    spec = definition.final
    by_config: dict[Any, list[FrozenTrial]] = {}
    for t in _finished(study):
        by_config.setdefault(_run_key(t.user_attrs[FINAL_ATTR])[0], []).append(t)
    configs, baseline_rows = [], []
    for key, runs in by_config.items():
        row = _row(runs)
        if isinstance(key, str):
            origin = runs[0].user_attrs[FINAL_ATTR]
            baseline_rows.append({**row, "name": key, "narrowed_from": origin.get("narrowed_from")})
        else:
            configs.append(row)
    configs.sort(key=lambda c: (-c["test_acc_mean"], c["search_rank"]))
    for i, c in enumerate(configs, start=1):
        c["final_rank"] = i
    pending = sum(t.user_attrs.get(TEST_ACC_ATTR) is None  # a RUNNING run with a test accuracy is done
                  for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))
    winner = select_winner(configs, spec["full_train"])
    planned_baselines = spec.get("baselines", [])
    return {"source": spec["source"], "full_train": spec["full_train"], "seeds": spec["seeds"],
            "configurations": sorted(configs, key=lambda c: c["search_rank"]),
            "baselines": sorted(baseline_rows, key=lambda b: -b["single_view_mean"]),
            "baselines_over_budget": spec.get("baselines_over_budget", []),
            "winner": winner and winner["source_trial"],
            "comparison": hand.compare(winner, baseline_rows),
            "rank_correlation": spearman([c["search_val_acc"] for c in configs], [c["test_acc_mean"] for c in configs]),
            "runs_done": sum(c["seeds_done"] for c in configs + baseline_rows),
            "runs_planned": (len(spec["source_trials"]) + len(planned_baselines)) * spec["seeds"],
            "runs_pending": pending}


def select_winner(configs: list[dict[str, Any]], full_train: bool) -> dict[str, Any] | None:
    """The searched configuration a user would hand in, chosen as `best_final` chooses: by mean
    final validation accuracy, or by the search's ranking when there was no validation split."""
    if not configs:
        return None
    if full_train or any(c["val_acc_mean"] is None for c in configs):
        return {**min(configs, key=lambda c: c["search_rank"]), "selected_by": "search rank (no validation split)"}
    return {**max(configs, key=lambda c: (c["val_acc_mean"], -c["search_rank"])),
            "selected_by": "mean final validation accuracy"}


def format_final(r: dict[str, Any]) -> str:
    data = "all training images, no validation" if r["full_train"] else "the search's train split, validation kept"
    lines = [f"  finalized from {r['source']} ({data}): {r['runs_done']} of {r['runs_planned']} runs done, "
             f"{r['runs_pending']} waiting or running",
             "    searched configurations (test accuracy as each recipe evaluates; flip: averaged with the mirror image)",
             f"    {'search rank':>11} {'trial':>5} {'params':>10} {'epochs':>6} {'search val acc':>14}  "
             f"{'test acc mean ± std (seeds)':<28} {'flip':>4} {'final val acc':>13} {'final rank':>10}"]
    for c in r["configurations"]:
        val = f"{c['val_acc_mean']:.4f}" if c["val_acc_mean"] is not None else "-"
        test = f"{c['test_acc_mean']:.4f} ± {c['test_acc_std']:.4f} ({c['seeds_done']})"
        lines.append(f"    {c['search_rank']:>11} {c['source_trial']:>5} {c['params'] or 0:>10,} {c['epochs']:>6} "
                     f"{c['search_val_acc']:>14.4f}  {test:<28} {'yes' if c['tta_flip'] else 'no':>4} {val:>13} "
                     f"{c['final_rank']:>10}")
    rho = r["rank_correlation"]
    lines.append(f"    rank correlation, search val vs final test (Spearman): {rho:.2f}" if rho is not None else
                 "    rank correlation: needs at least two finalized configurations with different results")
    if r.get("baselines") or r.get("baselines_over_budget"):
        lines.append("    baselines: hand designs with their published recipes, same epochs, seeds and data")
        lines.append(f"    {'design':<20} {'params':>10} {'epochs':>6}  {'test acc mean ± std (seeds)':<28} "
                     f"{'flip':>4} {'final val acc':>13}")
        for b in r["baselines"]:
            val = f"{b['val_acc_mean']:.4f}" if b["val_acc_mean"] is not None else "-"
            test = f"{b['test_acc_mean']:.4f} ± {b['test_acc_std']:.4f} ({b['seeds_done']})"
            narrowed = f"  (narrowed from {b['narrowed_from']:,} to the budget)" if b["narrowed_from"] else ""
            lines.append(f"    {b['name']:<20} {b['params']:>10,} {b['epochs']:>6}  {test:<28} "
                         f"{'yes' if b['tta_flip'] else 'no':>4} {val:>13}{narrowed}")
        for name in r.get("baselines_over_budget", []):
            lines.append(f"    {name:<20} not trained: over the budget even at the narrowest widths")
        lines.append(hand.format_comparison(r["comparison"]))
    return "\n".join(lines)


def best_final(study: optuna.Study, definition: StudyDefinition) -> tuple[FrozenTrial, str]:
    """The finalized model to hand over, and how it was chosen. Never by test accuracy: by
    the mean validation accuracy of the final runs (the best seed's run), or, when they
    trained on all images, by the search's ranking (the first seed's run)."""
    runs = [t for t in _finished(study) if t.state == TrialState.COMPLETE and t.user_attrs.get(MODEL_ARTIFACT_ATTR)
            and not t.user_attrs[FINAL_ATTR].get("baseline")]  # a baseline is a yardstick, never the hand-in
    if not runs:
        raise ValueError(f"study {study.study_name!r} has no finished final run yet: run `search worker "
                         f"--study {study.study_name}` first")
    by_config: dict[int, list[FrozenTrial]] = {}
    for t in runs:
        by_config.setdefault(t.user_attrs[FINAL_ATTR]["source_trial"], []).append(t)
    if not definition.final["full_train"]:
        config = max(by_config.values(), key=lambda rs: (statistics.fmean(r.user_attrs[VAL_ACC_ATTR] for r in rs),
                                                         -rs[0].user_attrs[FINAL_ATTR]["search_rank"]))
        return max(config, key=lambda r: (r.user_attrs[VAL_ACC_ATTR], -r.number)), "best mean final validation accuracy"
    config = min(by_config.values(), key=lambda rs: rs[0].user_attrs[FINAL_ATTR]["search_rank"])
    return (min(config, key=lambda r: r.user_attrs[FINAL_ATTR]["seed_index"]),
            "the search's ranking (no validation split in a full-train run)")


def companion(storage, study: optuna.Study, definition: StudyDefinition
              ) -> tuple[optuna.Study, StudyDefinition] | None:
    """The finalize study that goes with `study`: itself if it is one, else `S.final` if it exists."""
    if definition.final is not None:
        return study, definition
    try:
        return load_study(storage, final_study_name(study.study_name))
    except StudyNotFound:
        return None


def open_final(storage, name: str) -> tuple[optuna.Study, StudyDefinition]:
    """`name` if it is a finalize study, else its companion `name.final`."""
    study, definition = load_study(storage, name)
    if definition.final is not None:
        return study, definition
    try:
        return load_study(storage, final_study_name(name))
    except ValueError:
        raise ValueError(f"study {name!r} has no finalize study {final_study_name(name)!r}: "
                         f"run `search finalize --study {name}` first") from None



def write_final_section(study: optuna.Study, definition: StudyDefinition, out) -> list:
    """The finalize results appended to the report's summary.md."""
    r = final_results(study, definition)
    lines = ["", f"## Final runs (from study `{r['source']}`)", "",
             f"{r['runs_done']} of {r['runs_planned']} runs done on "
             f"{'all training images (no validation split)' if r['full_train'] else 'the search train split (validation kept)'}.", "",
             "| search rank | trial | params | epochs | search val acc | test acc (mean ± std) | flip averaged | seeds "
             "| final val acc | final rank |",
             "|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|"]
    for c in r["configurations"]:
        val = f"{c['val_acc_mean']:.4f}" if c["val_acc_mean"] is not None else "-"
        lines.append(f"| {c['search_rank']} | {c['source_trial']} | {c['params'] or 0:,} | {c['epochs']} | "
                     f"{c['search_val_acc']:.4f} | {c['test_acc_mean']:.4f} ± {c['test_acc_std']:.4f} | "
                     f"{'yes' if c['tta_flip'] else 'no'} | {c['seeds_done']} | {val} | {c['final_rank']} |")
    rho = r["rank_correlation"]
    lines += ["", f"Rank correlation of the search's validation ranking with the final test ranking "
                  f"(Spearman): {rho:.2f}." if rho is not None else
              "Rank correlation: needs two finalized configurations with different results.", ""]
    if r["baselines"] or r["baselines_over_budget"]:
        lines += ["### Baselines: hand designs with their published recipes (same epochs, seeds and data)", "",
                  "| design | params | epochs | test acc (mean ± std) | flip averaged | seeds | final val acc | note |",
                  "|---|---:|---:|---:|:---:|---:|---:|---|"]
        for b in r["baselines"]:
            val = f"{b['val_acc_mean']:.4f}" if b["val_acc_mean"] is not None else "-"
            note = f"narrowed from {b['narrowed_from']:,} to the budget" if b["narrowed_from"] else ""
            lines.append(f"| {b['name']} | {b['params']:,} | {b['epochs']} | {b['test_acc_mean']:.4f} ± "
                         f"{b['test_acc_std']:.4f} | {'yes' if b['tta_flip'] else 'no'} | {b['seeds_done']} | {val} | {note} |")
        for name in r["baselines_over_budget"]:
            lines.append(f"| {name} | | | | | | | over the budget even at the narrowest widths: not trained |")
        lines += ["", hand.format_comparison(r["comparison"]).strip() + ".", ""]
    with (out / "summary.md").open("a") as f:
        f.write("\n".join(lines))
    return []
