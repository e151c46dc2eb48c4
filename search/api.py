"""The library API: what each command does, on built objects (a storage, a definition,
options), returning results instead of printing them. `search/cli.py` resolves flags, opens
the storage, makes one call here and prints; a notebook or a test calls these directly with
any Optuna storage (`optuna.storages.InMemoryStorage()` included), as optuna's own `cli.py`
commands sit over `optuna.create_study` and optuna-dashboard's `run_server` over
`create_app(storage)`.

Imports are lazy where a module pulls in torch or matplotlib, so `search status` stays quick.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from core.settings import CIFAR10_TRAIN_IMAGES, DEFAULT_BUDGET, DEFAULT_SEED, DEFAULT_VAL_SIZE, WorkerOptions
from core.trials import FIXED_RECIPE_ATTR, OUTSIDE_SPACE_ATTR, PRESET_ATTR, PUBLISHED_ATTR, best_feasible
from .definition import StudyDefinition, StudyNotFound, load_study
from .progress import plural
from .strategies import DEFAULT_PRUNER, DEFAULT_SAMPLER


# ---- create ---------------------------------------------------------------------------------

def short_run_definition(space_json: str | None = None, budget: int = DEFAULT_BUDGET, epochs: int | None = None,
                         val_size: int = DEFAULT_VAL_SIZE, seed: int = DEFAULT_SEED, train_limit: int | None = None,
                         pruner: str = DEFAULT_PRUNER, sampler: str = DEFAULT_SAMPLER,
                         max_macs: int | None = None) -> StudyDefinition:
    """A study's definition from the create flags. Without a space file, the default ranges
    with the batch sizes and EMA a run of this length on this many images can use
    (objectives/budget.py); `epochs` fixes every trial's epochs."""
    from objectives.space import SearchSpace
    if space_json is not None:
        space = SearchSpace.from_json(space_json)
    else:
        from objectives.budget import fit_recipe_space
        n_train = min(train_limit or CIFAR10_TRAIN_IMAGES, CIFAR10_TRAIN_IMAGES - val_size)
        default = SearchSpace().recipe
        space = SearchSpace(recipe=fit_recipe_space(default, n_train, epochs or default.epochs[1]))
    if epochs is not None:
        space = dataclasses.replace(space, recipe=dataclasses.replace(space.recipe, epochs=(epochs, epochs)))
    return StudyDefinition(space=space, budget=budget, val_size=val_size, seed=seed, train_limit=train_limit,
                           pruner=pruner, sampler=sampler, max_macs=max_macs)


def create(storage, name: str, definition: StudyDefinition, artifacts: str | None = None) -> optuna.Study:
    """The study `name` (created, or the same definition found); with `artifacts`, the store
    is checked before the study is made and the study remembers where it is."""
    from .definition import create_study
    store = None
    if artifacts:
        from storage.artifacts import open_artifact_store
        store = open_artifact_store(artifacts)
    study = create_study(storage, name, definition)
    if store is not None:  # remembered: workers and readers need no flag
        from storage.artifacts import location_of, remember_location
        remember_location(study, location_of(store))
    return study


def is_final_study(storage, name: str) -> bool:
    """Whether `name` exists and is a finalize study (it has its own definition)."""
    try:
        return load_study(storage, name)[1].final is not None
    except StudyNotFound:
        return False


# ---- work -----------------------------------------------------------------------------------

def check_worker_options(opts: WorkerOptions) -> list[str | None]:
    """The worker's slots (CUDA_VISIBLE_DEVICES per slot, None for a CPU slot); bad options
    (a bad --gpus, more slots than the host runs) refused before anything is touched."""
    from .supervisor import slots
    return slots(opts.gpus, opts.per_gpu)


@dataclass(frozen=True)
class WorkStart:
    """What the start-up checks found: nothing to do (with the line that says why, empty
    where it was said already), or the study to work on."""
    nothing_to_do: str | None = None
    study: optuna.Study | None = None
    definition: StudyDefinition | None = None


def check_work(storage, study_name: str, opts: WorkerOptions, data_checked: bool = False) -> WorkStart:
    """The start-up checks of `search worker`, once per process: an unknown or hopeless
    study or missing data fails here, not in every slot. Reads go through the workers'
    database retry, so a dropped connection is not fatal."""
    from objectives.data import ensure_cifar10
    from storage.retry import DatabaseRetry
    from .eta import say_if_target_reached
    from .definition import check_workable
    from storage.snapshot import worker_study_storage
    db = DatabaseRetry(opts.db_wait, study_name)
    # The worker's view of the trials (storage/snapshot.py): a one-slot worker trains on this study.
    study, definition = db.call(load_study, worker_study_storage(storage), study_name)
    check_workable(definition)
    if not data_checked:  # `search run` checked it before creating the study
        ensure_cifar10(opts.data_dir)
    if definition.final is not None:  # its queue is all there is: no queue, no work (Optuna would sample)
        db.call(optuna.storages.fail_stale_trials, study)  # a killed run's trial goes back to the queue first
        if not db.call(study.get_trials, deepcopy=False, states=(TrialState.WAITING,)):
            return WorkStart(f"study {study_name}: no final run waiting (all done or running); "
                             f"see `search status --study {study_name}`")
    if db.call(say_if_target_reached, study, opts.n_trials, opts.timeout):
        return WorkStart("")  # say_if_target_reached printed why
    return WorkStart(study=study, definition=definition)


def work(storage, study_name: str, opts: WorkerOptions, plan: list[str | None] | None = None,
         data_checked: bool = False) -> int:
    """Run the worker once the start-up checks pass: its slots (`plan`, default from the
    options) as child processes, or one slot in this process on the storage and study
    opened for the checks. The exit code; the worker logs each trial to stdout."""
    from .supervisor import run_worker
    plan = plan if plan is not None else check_worker_options(opts)
    start = check_work(storage, study_name, opts, data_checked)
    if start.nothing_to_do is not None:
        if start.nothing_to_do:
            print(start.nothing_to_do)
        return 0
    if len(plan) == 1:
        return run_worker(opts, plan, opened=(storage, start.study, start.definition))
    storage.engine.dispose()  # the slot processes open their own; this one holds no connection
    return run_worker(opts, plan)


# ---- enqueue --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Enqueued:
    preset: str
    params: int
    recipe: dict[str, Any] | None  # the published recipe it trains with, or None: sampled


def enqueue_preset(storage, study_name: str, preset: str, with_recipe: bool = False,
                   outside_space: bool = False) -> Enqueued:
    """Queue a preset architecture as the study's next trial, with its published recipe or a
    sampled one; refused where the study could not train it as given."""
    from objectives import count_macs, count_params, get_preset
    from objectives.feasibility import check_space_fits
    from objectives.space import arch_to_params
    study, definition = load_study(storage, study_name)
    if outside_space and not with_recipe:
        raise ValueError("--outside-space goes with --with-recipe: a sampled recipe is always within the space")
    if definition.final is not None:  # its worker trains its queue as `search finalize` wrote it
        raise ValueError(f"study {study_name!r} is a finalize study: `search finalize` enqueues its runs")
    check_space_fits(definition.space.arch, definition.budget)  # as the worker checks the study first
    arch = get_preset(preset)
    n = count_params(arch)
    if n > definition.budget:
        raise ValueError(f"preset {preset} is over this study's budget: {n:,} > {definition.budget:,}")
    if definition.max_macs is not None and count_macs(arch) > definition.max_macs:
        raise ValueError(f"preset {preset} is over this study's compute budget: {count_macs(arch):,} MACs > "
                         f"--max-macs {definition.max_macs:,}")
    try:
        params = arch_to_params(arch, definition.space.arch)
    except ValueError as e:
        raise ValueError(f"preset {preset} cannot be expressed in this study's space: {e}") from None
    attrs: dict[str, Any] = {PRESET_ATTR: preset}
    if with_recipe:
        from objectives.published import get_published_recipe
        from objectives.recipe import outside_space as outside_of
        published = get_published_recipe(preset)
        outside = outside_of(published.recipe, definition.space.recipe)
        if outside and not outside_space:
            raise ValueError(f"the published recipe of {preset} is outside this study's space: "
                             f"{'; '.join(outside)}; add --outside-space to enqueue it anyway (the trial records it)")
        attrs.update({FIXED_RECIPE_ATTR: published.recipe.to_dict(), PUBLISHED_ATTR: preset})
        if outside:
            attrs[OUTSIDE_SPACE_ATTR] = outside
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
    return Enqueued(preset, n, attrs.get(FIXED_RECIPE_ATTR))


# ---- dashboard ------------------------------------------------------------------------------

def dashboard(storage, study_name: str | None = None, artifacts: str | None = None):
    """The artifact store the dashboard serves downloads from, and the page to open: one
    study's (its remembered store), or the storage's list of studies (the store they all
    remember). Without the store the dashboard lists artifacts but refuses each download."""
    from storage.artifacts import open_artifact_store
    from storage.dashboard import remembered_location
    if study_name is None:
        from core.settings import given_artifacts
        return open_artifact_store(given_artifacts(artifacts) or remembered_location(storage), create=False), "dashboard/"
    study, _ = load_study(storage, study_name)
    store = open_artifact_store(artifacts, create=False, study=study)  # a directory or S3, as workers write
    return store, f"dashboard/studies/{study._study_id}"


# ---- status, pareto -------------------------------------------------------------------------

def status(storage, study_name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The study's summary (search/status.py) and, where there is one, its finalize results:
    under "final" for a finalize study itself, "finalized" for a search with a companion."""
    from .finalize import companion, final_results
    from .status import summarize
    study, definition = load_study(storage, study_name)
    summary = summarize(study, definition)
    final = companion(storage, study, definition)  # this finalize study, or the search's S.final
    results = final_results(*final) if final is not None else None
    if results is not None:
        summary["final" if definition.final is not None else "finalized"] = results
    return summary, results


def pareto(storage, study_name: str) -> list[dict[str, Any]]:
    from .pareto import front_rows
    study, _ = load_study(storage, study_name)
    return front_rows(study)


# ---- export ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exported:
    data: dict[str, Any]   # what the file holds (search/export.py)
    checkpoint: Path       # the weights file (beside a graph, for torchscript/onnx)
    chosen_by: str | None  # how a final run was chosen (search/finalize.best_final)


def export(storage, study_name: str, out: str | Path, format_name: str, artifacts: str | None = None,
           final: bool = False, max_params: int | None = None, max_macs: int | None = None,
           force: bool = False) -> Exported:
    """Write the study's best model (or best finalized model, or best within limits) to `out`."""
    from .export import export_best
    chosen: FrozenTrial | None = None
    how = None
    if final:
        if max_params or max_macs:
            raise ValueError("--final exports the best finalized model; --max-params/--max-macs pick among search trials")
        from .finalize import best_final, open_final
        study, definition = open_final(storage, study_name)
        chosen, how = best_final(study, definition)
    else:
        study, _ = load_study(storage, study_name)
        if max_params or max_macs:
            chosen = best_feasible(study, max_params, max_macs)
            if chosen is None:
                limits = " and ".join(plural(v, k) for k, v in (("parameter", max_params), ("MAC", max_macs)) if v)
                raise ValueError(f"study {study_name!r} has no completed trial within {limits}")
    data, checkpoint = export_best(study, artifacts, out, format_name, chosen, force=force)
    return Exported(data, Path(checkpoint), how)


# ---- report ---------------------------------------------------------------------------------

def report(storage, study_name: str, out: str | Path, artifacts: str | None = None) -> list[Path]:
    """Plots and summary.md of the study in `out` (a folder whose parent exists): the search's
    own, its Pareto front, and its finalize results where there are some."""
    from .finalize import companion, final_results
    from .pareto import write_front_section
    from .report import model_note, write_report
    from .status import best_trial
    from .tables import final_markdown
    study, definition = load_study(storage, study_name)
    # The model of the trial the summary names as best (for a finalize study, not the top test value).
    files = write_report(study, definition, out, model_note(study, best_trial(study, definition)[0], artifacts))
    if definition.final is None:  # a finalize study's values are test accuracies: no front of those
        files += write_front_section(study, Path(out))
    final = companion(storage, study, definition)
    if final is not None:
        with (Path(out) / "summary.md").open("a") as f:
            f.write("\n".join(final_markdown(final_results(*final))))
    return files


# ---- finalize -------------------------------------------------------------------------------

def finalize(storage, study_name: str, top: int, epochs: int | None, seeds: int, full_train: bool = False,
             final_study: str | None = None, baselines: list[str] | None = None):
    """Enqueue the final runs (and the hand-designed `baselines`, names checked by
    search.baselines.parse_names) in the companion study; (the companion study, the runs
    enqueued now, the baselines over the budget even at the narrowest widths)."""
    from .definition import DEFINITION_ATTR
    from .finalize import finalize as enqueue_final_runs
    study, enqueued = enqueue_final_runs(storage, study_name, top, epochs, seeds, full_train, final_study, baselines)
    return study, enqueued, study.user_attrs[DEFINITION_ATTR]["final"].get("baselines_over_budget", [])
