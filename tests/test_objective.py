"""The objective in-process: the budget is enforced before anything is built."""
from __future__ import annotations

import optuna
import pytest
import torch

import search.objective as objective_mod
from objectives import ArchConfig, StageConfig
from objectives.data import load_cifar10
from objectives.recipe import Recipe
from objectives.prepare import prepare_data
from search.definition import StudyDefinition
from search.objective import Objective
from core.trials import BUDGET_CONSTRAINT
from storage.artifacts import open_artifact_store


def test_over_budget_samples_never_build_or_train(cifar_small, tmp_path, monkeypatch):
    import objectives.train as train_mod
    built = []
    real_build = train_mod.build
    # Spy where the call happens: the trainer's own reference to `build`.
    monkeypatch.setattr(train_mod, "build", lambda arch: built.append(arch) or real_build(arch))
    data = prepare_data(load_cifar10(cifar_small, download_missing=False), 200, 0)
    # The spy sees the trainer's builds (else this test could not fail).
    tiny = ArchConfig(stages=(StageConfig(1, 8),), pool_kernel=32)
    objective_mod.Trainer(tiny, Recipe(epochs=1, batch_size=64), data)
    assert built == [tiny]
    built.clear()

    def forbidden(*args, **kwargs):
        raise AssertionError("an over-budget config reached training")
    monkeypatch.setattr(objective_mod, "Trainer", forbidden)
    definition = StudyDefinition(budget=1_000)  # every config of the default space is over it
    objective = Objective(definition, data, torch.device("cpu"), open_artifact_store(str(tmp_path)), "s")
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=20)
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE and t.value == 0.0
        assert t.constraints[BUDGET_CONSTRAINT] == t.user_attrs["params"] - 1_000 > 0
        assert "over budget" in t.user_attrs["infeasible"]
    assert built == []  # nothing was built
    with pytest.raises(ValueError):  # no feasible trial: Optuna has no best
        study.best_trial


def test_a_retry_with_a_curve_whose_checkpoint_is_not_here_starts_over(tmp_path):
    """A retry run on another host than its checkpoint's (per-host artifact volumes, README)
    finds no file: it ends at once to start over, rather than crash the worker on an attribute
    optuna.Trial lacks (found by tests/test_compose_engine.py's second host)."""
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(0.5, 1)
    trial.set_user_attr("resume_checkpoint", {"artifact_id": "on-another-host", "trial_id": trial._trial_id,
                                              "epoch": 1})
    objective = Objective(StudyDefinition(), None, torch.device("cpu"), open_artifact_store(str(tmp_path)), "s")
    loaded = []
    trainer = __import__("types").SimpleNamespace(load_checkpoint=loaded.append)
    with pytest.raises(objective_mod.StartOver):
        objective._resume(trial, trainer)
    assert loaded == []  # no file to load
    assert trial.user_attrs["resume_error"].startswith("could not resume from epoch 1")
