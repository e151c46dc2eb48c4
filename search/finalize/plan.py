"""Planning of `search finalize`: which configurations (and hand-designed baselines) to
retrain, with which recipe and seeds, enqueued as trials of the companion study `S.final`;
and finding that study again. The runs are trained by ordinary workers with the objective in
objective.py; results.py sums them up.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from core.settings import FINALIZE_SEEDS, FINALIZE_TOP
from core.trials import (ARCHITECTURE_ATTR, FINAL_ATTR, FIXED_ARCH_ATTR, FIXED_RECIPE_ATTR, PARAMS_ATTR, PUBLISHED_ATTR,
                         RECIPE_ATTR, SEED_ATTR, feasible_trials)
from objectives import ArchConfig
from objectives.recipe import Recipe
from objectives.space import arch_to_params

from .. import baselines as hand
from ..definition import StudyClash, StudyDefinition, StudyNotFound, create_study, load_study

FINAL_SUFFIX = ".final"
EPOCHS_FACTOR = 5           # default final schedule: 5 x the search's epochs per trial


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
    except StudyClash:
        raise ValueError(f"study {name!r} holds a finalize of other options or other top trials (the search has "
                         f"moved on?); pass --final-study NEW_NAME to finalize again") from None
    present = {run_key(t.user_attrs[FINAL_ATTR]) for t in final.get_trials(deepcopy=False) if FINAL_ATTR in t.user_attrs}
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
            if run_key(origin) in present:
                continue
            final.enqueue_trial({}, user_attrs={FIXED_RECIPE_ATTR: recipe, FIXED_ARCH_ATTR: b.arch.to_dict(),
                                                SEED_ATTR: definition.seed + i, FINAL_ATTR: origin,
                                                PARAMS_ATTR: b.params})
            enqueued.append({**origin, "epochs": recipe["epochs"]})
    return final, enqueued


def run_key(origin: dict[str, Any]) -> tuple[Any, int]:
    """One final run: its configuration (a search trial's number, or a baseline's name) and seed."""
    return origin.get("baseline") or origin["source_trial"], origin["seed_index"]


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

