"""The library API (search/api.py) on an in-memory Optuna storage: what a notebook does
without a process, a database server or the command line."""
from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from core.trials import ARCHITECTURE_ATTR, MACS_ATTR, PARAMS_ATTR, PRESET_ATTR, RECIPE_ATTR
from objectives import count_params, get_preset
from search import api
from tests.helpers import VARIED_SPACE


@pytest.fixture
def storage():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.InMemoryStorage()


def test_create_is_idempotent_and_refuses_a_clash(storage):
    definition = api.short_run_definition(budget=300_000, epochs=2, train_limit=5_000, val_size=500)
    study = api.create(storage, "s", definition)
    assert api.create(storage, "s", definition).study_name == study.study_name == "s"
    assert definition.space.recipe.epochs == (2, 2)
    with pytest.raises(ValueError, match="budget: stored 300000, given 400000"):
        api.create(storage, "s", api.short_run_definition(budget=400_000, epochs=2, train_limit=5_000, val_size=500))
    assert not api.is_final_study(storage, "s") and not api.is_final_study(storage, "missing")


def test_short_run_definition_fits_batch_sizes_to_the_images(storage):
    small = api.short_run_definition(train_limit=2_000, epochs=2, val_size=500).space.recipe
    full = api.short_run_definition().space.recipe
    assert max(small.batch_sizes) < max(full.batch_sizes)  # a few hundred steps, not a handful
    given = api.short_run_definition(json.dumps(VARIED_SPACE)).space.recipe
    assert given.optimizers == tuple(VARIED_SPACE["recipe"]["optimizers"])  # a space file is taken as written


def test_enqueue_preset_queues_it_and_refuses_what_the_study_cannot_train(storage):
    api.create(storage, "s", api.short_run_definition(budget=5_000_000, epochs=2))
    queued = api.enqueue_preset(storage, "s", "resnet20-he", with_recipe=True, outside_space=True)
    assert queued.params == count_params(get_preset("resnet20-he")) and queued.recipe["optimizer"] == "sgd"
    waiting = optuna.load_study(study_name="s", storage=storage).get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[PRESET_ATTR] for t in waiting] == ["resnet20-he"]
    api.create(storage, "tiny", api.short_run_definition(budget=100_000, epochs=2))
    with pytest.raises(ValueError, match="over this study's budget"):
        api.enqueue_preset(storage, "tiny", "resnet24-steroids")
    with pytest.raises(ValueError, match="--outside-space goes with --with-recipe"):
        api.enqueue_preset(storage, "s", "resnet20-he", outside_space=True)


def test_status_pareto_and_export_read_what_trials_recorded(storage, tmp_path):
    api.create(storage, "s", api.short_run_definition(budget=5_000_000, epochs=2))
    study = optuna.load_study(study_name="s", storage=storage)
    arch = get_preset("resnet20-he")
    for value, params in ((0.6, 300_000), (0.7, 270_000)):  # the second dominates the first
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            PARAMS_ATTR: params, MACS_ATTR: 40_000_000, ARCHITECTURE_ATTR: arch.to_dict(), RECIPE_ATTR: {}}))
    summary, final = api.status(storage, "s")
    assert summary["counts"]["complete"] == 2 and summary["best"]["trial"] == 1 and final is None
    assert [r["trial"] for r in api.pareto(storage, "s")["params"]] == [1]
    with pytest.raises(ValueError, match="no completed trial within 100,000 parameters"):
        api.export(storage, "s", tmp_path / "b.pt", "checkpoint", max_params=100_000)
    with pytest.raises(ValueError, match="no study named 'nope'"):
        api.status(storage, "nope")


def test_finalize_again_with_other_options_names_the_clash(storage):
    from objectives.recipe import Recipe
    api.create(storage, "s", api.short_run_definition(budget=5_000_000, epochs=2))
    study = optuna.load_study(study_name="s", storage=storage)
    arch = get_preset("resnet20-he")
    study.add_trial(optuna.trial.create_trial(value=0.6, user_attrs={
        PARAMS_ATTR: count_params(arch), MACS_ATTR: 40_000_000, ARCHITECTURE_ATTR: arch.to_dict(),
        RECIPE_ATTR: Recipe(epochs=2).to_dict()}))
    final, enqueued, over_budget = api.finalize(storage, "s", top=1, epochs=None, seeds=2)
    assert final.study_name == "s.final" and len(enqueued) == 2 and over_budget == []
    assert api.finalize(storage, "s", top=1, epochs=None, seeds=2)[1] == []  # all enqueued before
    with pytest.raises(ValueError, match="holds a finalize of other options .* --final-study NEW_NAME"):
        api.finalize(storage, "s", top=1, epochs=None, seeds=3)
