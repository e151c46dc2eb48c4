"""The objective in-process: the budget is enforced before anything is built."""
from __future__ import annotations

import optuna
import pytest
import torch

import search.objective as objective_mod
from objectives.data import load_cifar10
from objectives.train import prepare_data
from search.definition import StudyDefinition
from search.objective import BUDGET_CONSTRAINT, Objective
from storage.artifacts import open_artifact_store


def test_over_budget_samples_never_build_or_train(cifar_small, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("an over-budget config reached model building or training")
    monkeypatch.setattr(objective_mod, "Trainer", forbidden)
    monkeypatch.setattr("objectives.model.build", forbidden)
    definition = StudyDefinition(budget=1_000)  # every config of the default space is over it
    data = prepare_data(load_cifar10(cifar_small, download_missing=False), 200, 0)
    objective = Objective(definition, data, torch.device("cpu"), open_artifact_store(str(tmp_path)), "s")
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=20)
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE and t.value == 0.0
        assert t.constraints[BUDGET_CONSTRAINT] == t.user_attrs["params"] - 1_000 > 0
        assert "over budget" in t.user_attrs["infeasible"]
    with pytest.raises(ValueError):  # no feasible trial: Optuna has no best
        study.best_trial
