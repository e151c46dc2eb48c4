"""The seed presets carry their reports' recipes: complete, valid, round-tripping, enqueueable."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
from optuna.trial import TrialState

from objectives import count_params, get_preset
from objectives.published import BASELINE_RECIPES, HE_RESNET20, PUBLISHED_RECIPES, PublishedRecipe, get_published_recipe
from objectives.recipe import Recipe
from core.trials import FIXED_RECIPE_ATTR, PUBLISHED_ATTR
from tests.conftest import SHARED
from tests.helpers import load, one_line_error, search

SEEDS = SHARED / "seeds"


def seed_table() -> dict[str, str]:
    """preset -> report file, from the seeds README's table."""
    rows = re.findall(r"^\| (\S+\.txt) \| .* \| (\S+) \|$", (SEEDS / "README.md").read_text(), re.M)
    return {preset: file for file, preset in rows}


def test_every_seed_preset_within_budget_has_its_reports_recipe():
    table = seed_table()
    within = {p for p in table if count_params(get_preset(p)) <= 5_000_000}
    assert within == set(PUBLISHED_RECIPES) == {"resnet24-steroids", "se-resnet-rawat", "resnet-nightshade",
                                                "resnet9-kuangliu"}
    for preset, published in PUBLISHED_RECIPES.items():
        assert published.source == table[preset] and (SEEDS / published.source).exists()


@pytest.mark.parametrize("preset", sorted(BASELINE_RECIPES))
def test_published_recipe_round_trips_validates_and_names_every_choice(preset):
    published = get_published_recipe(preset)
    assert PublishedRecipe.from_dict(json.loads(json.dumps(published.to_dict()))) == published
    assert Recipe.from_dict(json.loads(json.dumps(published.recipe.to_dict()))) == published.recipe
    assert published.unaccounted_fields() == []  # every field: stated, chosen with a reason, or inapplicable
    assert all(reason.strip() for reason in published.choices.values())
    if preset in PUBLISHED_RECIPES:  # the seed reports give exact sizes; He et al. give 0.27M for option A
        assert count_params(get_preset(preset)) == published.reported["params"]


def test_baselines_are_the_seed_recipes_and_resnet20_as_he_et_al_trained_it():
    assert BASELINE_RECIPES == {**PUBLISHED_RECIPES, "resnet20-he": HE_RESNET20}
    he = HE_RESNET20.recipe
    assert (he.optimizer, he.lr, he.momentum, he.weight_decay, he.batch_size, he.epochs) == ("sgd", 0.1, 0.9, 1e-4, 128, 164)
    # the lr divided by 10 at 50% and 75% of training (32k and 48k of 64k iterations)
    from objectives.schedule import lr_factor
    steps = 352
    factors = [lr_factor(he, steps, epoch * steps) for epoch in (0, 81, 82, 122, 123, 163)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_published_recipes_reject_bad_entries():
    good = PUBLISHED_RECIPES["se-resnet-rawat"].to_dict()
    with pytest.raises(ValueError, match="unknown recipe fields"):
        PublishedRecipe.from_dict({**good, "choices": {"lr_warmup": "typo"}})
    with pytest.raises(ValueError, match="both stated and chosen"):
        PublishedRecipe.from_dict({**good, "choices": {**good["choices"], "lr": "twice"}})
    with pytest.raises(ValueError, match="recipe.optimizer"):
        PublishedRecipe.from_dict({**good, "recipe": {**good["recipe"], "optimizer": "lamb"}})
    with pytest.raises(ValueError, match="no published recipe"):
        get_published_recipe("resnet18-kuangliu")
    incomplete = dataclasses.replace(PUBLISHED_RECIPES["se-resnet-rawat"], choices={})
    assert "tta_flip" in incomplete.unaccounted_fields()


def test_enqueue_with_recipe_queues_the_published_recipe(env, tmp_path):
    env = dict(env, SEARCH_STORAGE=f"sqlite:///{tmp_path / 'search.db'}")
    search("create", "--study", "p", "--budget", "12000000", env=env)  # resnet18-kuangliu (11.2M) fits, without a recipe
    # 200 epochs, batch 128, clipping by value: more than the default space draws, so said on purpose
    out = search("enqueue", "--study", "p", "--preset", "se-resnet-rawat", "--with-recipe", "--outside-space",
                 env=env).stdout
    assert "published recipe" in out and "200 epochs" in out
    search("enqueue", "--study", "p", "--preset", "resnet9-kuangliu", env=env)  # without: sampled as before
    waiting = load(env["SEARCH_STORAGE"], "p").get_trials(states=(TrialState.WAITING,))
    assert waiting[0].user_attrs[FIXED_RECIPE_ATTR] == PUBLISHED_RECIPES["se-resnet-rawat"].recipe.to_dict()
    assert waiting[0].user_attrs[PUBLISHED_ATTR] == "se-resnet-rawat"
    assert "epochs 200 (space: [20, 20])" in waiting[0].user_attrs["outside_space"]
    assert FIXED_RECIPE_ATTR not in waiting[1].user_attrs
    line = one_line_error(search("enqueue", "--study", "p", "--preset", "resnet18-kuangliu", "--with-recipe", env=env,
                                 check=False))
    assert "no published recipe" in line
