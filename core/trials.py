"""One trial vocabulary: the names of what a trial records, and what a trial counts as.

Every module that reads or writes a trial's user attributes uses these names, and asks
`is_infeasible`, `counts_as_trained` and `best_feasible` rather than spelling the rules
again. Light on purpose (Optuna only): status, export and the CLI import it without torch.
"""
from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

# ---- trial user attributes -----------------------------------------------------------------
# Written by the objective (search/objective.py) for every sample:
PARAMS_ATTR = "params"                # trainable parameters of the sampled architecture
MACS_ATTR = "macs"                    # multiply-accumulates per image
INFEASIBLE_ATTR = "infeasible"        # the reason an over-budget sample was not trained
# ... for a sample within the budget, as it trains:
ARCHITECTURE_ATTR = "architecture"    # ArchConfig.to_dict()
RECIPE_ATTR = "recipe"                # Recipe.to_dict()
# ... the same two as one line each, for a person reading the dashboard's user attributes
ARCHITECTURE_TEXT_ATTR = "architecture (readable)"
RECIPE_TEXT_ATTR = "recipe (readable)"
DEVICE_ATTR = "device"
WORKER_ATTR = "worker"                # {"host", "pid"}
CURVE_ATTR = "curve"                  # per-epoch metrics so far
RESUME_CHECKPOINT_ATTR = "resume_checkpoint"  # {"artifact_id", "trial_id", "epoch"}; None once finished
RESUME_ERROR_ATTR = "resume_error"
RESUMED_FROM_EPOCH_ATTR = "resumed_from_epoch"
SECONDS_ATTR = "seconds"
IMAGES_PER_SECOND_ATTR = "images_per_second"
MODEL_ARTIFACT_ATTR = "model_artifact"  # artifact id of the trial's model file
BEST_EPOCH_ATTR = "best_epoch"
FAIL_REASON_ATTR = "fail_reason"      # why a FAIL ended (NaN, OOM, a stopped worker)
REQUEUED_ATTR = "requeued"            # the FAIL was queued again: its retry carries on the work
# Set when a trial is enqueued (`search enqueue`, `search finalize`):
PRESET_ATTR = "preset"
# A fixed recipe (`search enqueue --with-recipe`, `search finalize`) and training seed replace
# what is otherwise drawn. A fixed recipe's run is never pruned: its schedule is not the
# study's, so the pruner's rungs do not compare it fairly.
FIXED_RECIPE_ATTR = "fixed_recipe"
# A fixed architecture (`search finalize --baselines`: a hand design the space may not express)
# replaces the sampled one the same way.
FIXED_ARCH_ATTR = "fixed_architecture"
SEED_ATTR = "seed"
PUBLISHED_ATTR = "published_recipe"   # the preset whose published recipe an enqueued trial trains with
OUTSIDE_SPACE_ATTR = "outside_space"  # the fixed recipe's values the study's space cannot produce (enqueued anyway)
# A finalize study's runs (search/finalize/):
FINAL_ATTR = "final"                  # where its configuration came from, which seed
TEST_ACC_ATTR = "test_acc"           # as the run's recipe evaluates: with flip averaging if tta_flip
SINGLE_VIEW_TEST_ACC_ATTR = "test_acc_single_view"  # each test image once: what every run can be compared on
VAL_ACC_ATTR = "val_acc"
UNUSED_ATTR = "unused"                # a placeholder a worker got once the queue was empty

# The constraint every sample records: params - budget, <= 0 is feasible. Optuna reads it
# (constrained TPE, `study.best_trial`, the dashboard and plots), so it defines feasibility.
BUDGET_CONSTRAINT = "params_over_budget"
MACS_CONSTRAINT = "macs_over_budget"   # recorded by studies with a compute budget (--max-macs)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INFEASIBLE_STATE = "infeasible"
STATE_NAMES = ("complete", "pruned", INFEASIBLE_STATE, "fail", "running", "waiting")  # as status and report list them


def flip_averaged(user_attrs: dict) -> bool:
    """Whether the trial's accuracies average each image with its mirror: its recipe's tta_flip,
    which training's validation, a final run's test and `search evaluate` all follow."""
    recipe = user_attrs.get(RECIPE_ATTR) or user_attrs.get(FIXED_RECIPE_ATTR) or {}
    return bool(recipe.get("tta_flip", False))


def accuracy_label(split: str, value: float, flip: bool) -> str:
    """`val acc 0.5360 (flip averaging on)`: every accuracy a command prints names its split and
    whether flip averaging made it (the same model scores differently with and without)."""
    return f"{split} acc {value:.4f} (flip averaging {'on' if flip else 'off'})"


def is_infeasible(trial: FrozenTrial) -> bool:
    """Over the budget: sampled and counted, never built or trained. Optuna's own rule (any
    constraint > 0), so this agrees with `study.best_trial`; the objective records the
    constraint and the INFEASIBLE_ATTR reason together."""
    return any(v > 0.0 for v in trial.constraints.values())


def state_name(trial: FrozenTrial) -> str:
    """How status, report and the time split name a trial's state: Optuna's, except that an
    over-budget sample (COMPLETE with value 0) is "infeasible"."""
    return INFEASIBLE_STATE if trial.state == TrialState.COMPLETE and is_infeasible(trial) else trial.state.name.lower()


def counts_as_trained(trial: FrozenTrial) -> bool:
    """Whether a trial counts as one trained trial: towards `--n-trials`, `search status` and
    its rate, the ETA, and the report. It trained, it ended, and no retry of it will follow:

    - COMPLETE within the budget;
    - PRUNED after at least one reported epoch (a finalize worker's "unused" placeholder is
      PRUNED without one: nothing trained);
    - FAIL with a reason and not re-queued (NaN, OOM: training was spent, nobody retries it).

    Not counted: an over-budget sample (nothing trained); a FAIL that was re-queued (a stopped
    worker, a database outage) or has no reason (a dead worker's trial failed by the heartbeat
    check): its retry is counted when it ends, and counting both would count one configuration
    twice. This is the worker's former rule; `search status` used to count re-queued FAILs in
    its trials per hour but not in its target, so its ETA mixed two units."""
    if trial.state == TrialState.COMPLETE:
        return not is_infeasible(trial)
    if trial.state == TrialState.PRUNED:
        return bool(trial.intermediate_values) and not is_infeasible(trial)
    if trial.state == TrialState.FAIL:
        return bool(trial.user_attrs.get(FAIL_REASON_ATTR)) and not trial.user_attrs.get(REQUEUED_ATTR)
    return False


def trained_trials(study: optuna.Study) -> int:
    """How many trials of the study count as trained (the `--n-trials` target counts these)."""
    return sum(counts_as_trained(t) for t in study.get_trials(deepcopy=False, states=FINISHED))


def feasible_trials(study_or_trials: optuna.Study | list[FrozenTrial]) -> list[FrozenTrial]:
    """Complete, within budget, with a value and a recorded size."""
    trials = (study_or_trials.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if isinstance(study_or_trials, optuna.Study) else study_or_trials)
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and not is_infeasible(t)
            and PARAMS_ATTR in t.user_attrs and MACS_ATTR in t.user_attrs]


def best_feasible(study: optuna.Study, max_params: int | None = None, max_macs: int | None = None
                  ) -> FrozenTrial | None:
    """The most accurate feasible trial, within the size limits if given; None when there is none.

    Without limits, Optuna's `study.best_trial`: it already skips a trial whose constraint is
    violated, and status, report and export then name the trial the dashboard names. With
    limits (`search export-best --max-params/--max-macs`), the most accurate trial that fits,
    the earlier one on ties (between equally accurate trials Optuna's pick depends on the
    storage: SQL `ORDER BY value` alone)."""
    if max_params is not None or max_macs is not None:
        return best_of(feasible_trials(study), max_params, max_macs)
    try:
        best = study.best_trial
    except ValueError:  # no complete trial, or none within the budget
        return None
    if (best.user_attrs.get(FINAL_ATTR) or {}).get("baseline"):  # a yardstick of `finalize --baselines`
        return best_of([t for t in feasible_trials(study)
                        if not (t.user_attrs.get(FINAL_ATTR) or {}).get("baseline")], None, None)
    return best


def best_of(trials: list[FrozenTrial], max_params: int | None = None, max_macs: int | None = None
            ) -> FrozenTrial | None:
    """The most accurate of `trials` within the size limits, the earlier trial on ties."""
    fits = [t for t in trials if _fits(t, max_params, max_macs)]
    return max(fits, key=lambda t: (t.value, -t.number)) if fits else None


def _fits(trial: FrozenTrial, max_params: int | None, max_macs: int | None) -> bool:
    a = trial.user_attrs
    return ((max_params is None or a.get(PARAMS_ATTR, float("inf")) <= max_params)
            and (max_macs is None or a.get(MACS_ATTR, float("inf")) <= max_macs))
