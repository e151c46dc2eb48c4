"""Results of a finalize study: per configuration (and per baseline) the test accuracy's
mean and standard deviation over seeds, how the final ranking agrees with the search's
(Spearman), the winner a user would hand in and its gain over the best baseline; and the
finalized model to export. Rendered as text and markdown by search/tables.py."""
from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from core.trials import FINAL_ATTR, FIXED_RECIPE_ATTR, MODEL_ARTIFACT_ATTR, PARAMS_ATTR, SINGLE_VIEW_TEST_ACC_ATTR, TEST_ACC_ATTR, VAL_ACC_ATTR

from .. import baselines as hand
from ..definition import DEFINITION_ATTR, StudyDefinition
from .plan import run_key

RESULTS_ATTR = "final_results"  # on the companion study: the summary below, kept current by the workers


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


def finished_runs(study: optuna.Study) -> list[FrozenTrial]:
    """Final trials with a test accuracy, one per (configuration, seed). A RUNNING one with a
    test accuracy is the caller's own run, finished but not yet marked complete."""
    latest: dict[tuple[int, int], FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        origin = t.user_attrs.get(FINAL_ATTR)
        if origin and t.user_attrs.get(TEST_ACC_ATTR) is not None:
            key = run_key(origin)
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
    for t in finished_runs(study):
        by_config.setdefault(run_key(t.user_attrs[FINAL_ATTR])[0], []).append(t)
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


def best_final(study: optuna.Study, definition: StudyDefinition) -> tuple[FrozenTrial, str]:
    """The finalized model to hand over, and how it was chosen. Never by test accuracy: by
    the mean validation accuracy of the final runs (the best seed's run), or, when they
    trained on all images, by the search's ranking (the first seed's run)."""
    runs = [t for t in finished_runs(study) if t.state == TrialState.COMPLETE and t.user_attrs.get(MODEL_ARTIFACT_ATTR)
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
