"""The trial vocabulary: what counts as infeasible and as trained, the best feasible trial, and
the report drawn from a study of recorded trials (no training: every state built by hand)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState
from PIL import Image

from search.definition import StudyDefinition
from search.report import MIN_TRIALS_FOR_IMPORTANCES, write_report
from search.status import format_summary, summarize
from core.trials import (BUDGET_CONSTRAINT, FAIL_REASON_ATTR, INFEASIBLE_ATTR, MACS_ATTR, PARAMS_ATTR,
                           REQUEUED_ATTR, best_feasible, counts_as_trained, is_infeasible, trained_trials)

BUDGET = 10_000
DISTRIBUTIONS = {"width": IntDistribution(8, 64), "lr": FloatDistribution(1e-3, 1.0, log=True)}


def sample(state=TrialState.COMPLETE, value=None, params=5_000, epochs=(), start=None, **attrs):
    """A trial as a worker leaves it: sizes, the budget constraint, the epochs it reported."""
    rng = np.random.default_rng(params)
    t = optuna.trial.create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        params={"width": int(rng.integers(8, 65)), "lr": float(rng.uniform(1e-3, 1.0))}, distributions=DISTRIBUTIONS,
        user_attrs={PARAMS_ATTR: params, MACS_ATTR: params * 10, **attrs},
        intermediate_values=dict(enumerate(epochs, start=1)), constraints={BUDGET_CONSTRAINT: float(params - BUDGET)})
    start = start or dt.datetime(2026, 1, 1)
    t.datetime_start, t.datetime_complete = start, start + dt.timedelta(minutes=10)
    return t


def test_trained_means_it_trained_ended_and_no_retry_follows():
    over = sample(value=0.0, params=20_000, **{INFEASIBLE_ATTR: "over budget"})
    cases = {
        "complete": (sample(value=0.8, epochs=[0.7, 0.8]), True),
        "over budget": (over, False),
        "pruned after an epoch": (sample(TrialState.PRUNED, epochs=[0.3]), True),
        "pruned with no epoch (an unused finalize placeholder)": (sample(TrialState.PRUNED), False),
        "failed: NaN": (sample(TrialState.FAIL, **{FAIL_REASON_ATTR: "diverged"}), True),
        "failed and re-queued": (sample(TrialState.FAIL, **{FAIL_REASON_ATTR: "worker stopped", REQUEUED_ATTR: True}),
                                 False),
        "failed by the heartbeat check": (sample(TrialState.FAIL), False),
        "running": (sample(TrialState.RUNNING, epochs=[0.5]), False),
    }
    for name, (t, trained) in cases.items():
        assert counts_as_trained(t) == trained, name
    assert is_infeasible(over) and not is_infeasible(cases["complete"][0])
    study = optuna.create_study(direction="maximize")
    study.add_trials([t for t, _ in cases.values() if t.state != TrialState.RUNNING])
    assert trained_trials(study) == 3
    # status counts the same trials towards its target, and its rate: 3 in 10 minutes.
    s = summarize(study)
    assert s["progress"]["trained"] == 3 and s["trials_per_hour"] == 18.0
    assert s["counts"]["infeasible"] == 1 and s["counts"]["complete"] == 1


def test_best_feasible_is_optunas_best_trial_and_none_without_one():
    study = optuna.create_study(direction="maximize")
    assert best_feasible(study) is None
    study.add_trial(sample(value=0.0, params=BUDGET + 1, **{INFEASIBLE_ATTR: "over budget"}))
    assert best_feasible(study) is None  # over budget only: nothing to name
    study.add_trial(sample(value=0.6, params=4_000))
    study.add_trial(sample(value=0.7, params=9_000))
    assert best_feasible(study).number == study.best_trial.number == 2
    assert best_feasible(study, max_params=5_000).number == 1
    assert best_feasible(study, max_macs=30_000) is None


def coloured_pixels(path) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((pixels.max(axis=2) - pixels.min(axis=2) > 60).sum())


@pytest.mark.parametrize("n_trained", [MIN_TRIALS_FOR_IMPORTANCES - 1, MIN_TRIALS_FOR_IMPORTANCES + 2])
def test_report_draws_importances_only_from_enough_trained_trials(tmp_path, n_trained):
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize")
    start = dt.datetime(2026, 1, 1)
    for i in range(n_trained):
        at = start + dt.timedelta(minutes=10 * i)
        curve = list(np.cumsum(rng.uniform(0.05, 0.2, 3)))
        study.add_trial(sample(value=curve[-1], params=3_000 + 500 * i, epochs=curve, start=at) if i % 3 else
                        sample(TrialState.PRUNED, params=3_000 + 500 * i, epochs=curve[:1], start=at))
    for i in range(5):  # over budget: not trained, never counted among the importances' trials
        study.add_trial(sample(value=0.0, params=BUDGET * 2 + i, **{INFEASIBLE_ATTR: "over budget"}))
    files = write_report(study, StudyDefinition(budget=BUDGET), tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert [f.name for f in files] == ["history.png", "accuracy_vs_params.png", "learning_curves.png",
                                       "importances.png", "summary.md"]
    assert f"## Best trial: {study.best_trial.number}" in summary and "| infeasible | 5 |" in summary
    for name in ("history", "accuracy_vs_params", "learning_curves"):
        assert coloured_pixels(tmp_path / f"{name}.png") > 40, name
    if n_trained < MIN_TRIALS_FOR_IMPORTANCES:
        assert f"no importances: {n_trained} trained trials" in summary
        assert coloured_pixels(tmp_path / "importances.png") == 0  # the reason in grey text, no bars
    else:
        assert "no importances" not in summary
        assert coloured_pixels(tmp_path / "importances.png") > 400  # Optuna's bars


def test_status_names_each_stage_of_the_best_trial_with_its_block_type():
    from core.trials import ARCHITECTURE_ATTR
    stages = [{"blocks": 2, "channels": 32, "conv_kernel": 3, "skip_kernel": 1, "block": "bottleneck"},
              {"blocks": 1, "channels": 64, "conv_kernel": 5, "skip_kernel": 3}]  # stored before block types: basic
    study = optuna.create_study(direction="maximize")
    study.add_trial(sample(value=0.7, **{ARCHITECTURE_ATTR: {"stages": stages, "pool_kernel": 4}}))
    assert "stages 2x32 bottleneck(F3,K1) 1x64 basic(F5,K3), pool 4" in format_summary(summarize(study))


def test_every_best_names_its_split_and_flip_averaging_and_validation_chooses():
    """status, report and pareto name the same best trial, chosen by validation, and each accuracy
    says its split and whether flip averaging made it (the recipe's tta_flip)."""
    from search.pareto import format_front, front_rows
    flipped, single = {"recipe": {"tta_flip": True, "epochs": 2}}, {"recipe": {"tta_flip": False, "epochs": 2}}
    study = optuna.create_study(direction="maximize")
    study.add_trials([sample(value=0.51, params=4_000, **flipped), sample(value=0.47, params=3_000, **single)])
    text = format_summary(summarize(study, StudyDefinition(budget=BUDGET)))
    assert "best (by best validation accuracy): trial 0, val acc 0.5100 (flip averaging on), 4,000 params" in text
    front = format_front(front_rows(study), study.study_name)
    assert "val acc flip" in front and " 0.5100   on " in front and " 0.4700  off " in front, front


def test_a_finalize_study_best_is_chosen_by_validation_as_export_best_final_chooses(tmp_path):
    """A finalize study's values are test accuracies: its best is not the top test run but the
    one `export-best --final` hands over (best mean final validation accuracy), in status and report."""
    from search.finalize import best_final
    definition = StudyDefinition(budget=BUDGET, final={"source": "s", "full_train": False, "seeds": 1, "top": 2,
                                                       "epochs": 4, "source_trials": [3, 5]})
    study = optuna.create_study(direction="maximize")
    for number, (val, test) in {3: (0.60, 0.52), 5: (0.55, 0.53)}.items():
        origin = {"source_study": "s", "source_trial": number, "search_rank": 1, "search_val_acc": 0.5, "seed_index": 0}
        study.add_trial(sample(value=test, final=origin, test_acc=test, val_acc=val, model_artifact="m",
                               recipe={"tta_flip": True, "epochs": 4}))
    chosen, how = best_final(study, definition)
    s = summarize(study, definition)
    assert s["best"]["trial"] == chosen.number == 0 and study.best_trial.number == 1  # not Optuna's top test
    assert (f"best (by {how}): trial 0, val acc 0.6000 (flip averaging on), test acc 0.5200 (flip averaging on)"
            in format_summary(s))
    write_report(study, definition, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Best trial: 0" in summary and "validation accuracy **0.6000** (flip averaging on)" in summary
    assert "test accuracy **0.5200** (flip averaging on)" in summary
