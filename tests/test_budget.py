"""Samples fit the study: widths narrowed to the budget, recipe ranges fitted to short runs."""
from __future__ import annotations

import optuna
import pytest

from objectives import PRESETS, count_params
from objectives.budget import MIN_STEPS_PER_EPOCH, fit_recipe_space, fit_to_budget
from objectives.recipe import RecipeSpace
from objectives.space import ArchSpace, arch_to_params, sample_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("budget", [250_000, 1_000_000, 5_000_000])
def test_samples_fit_the_budget_keep_their_shape_and_can_be_enqueued_again(budget):
    space = ArchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    over = 0
    for _ in range(60):
        trial = study.ask()
        raw = sample_arch(trial, space)
        arch = sample_arch(optuna.trial.FixedTrial(trial.params), space, budget)
        over += count_params(arch) > budget
        # Only widths change, each to a listed width no wider than drawn; the rest is the draw.
        assert [(s.blocks, s.conv_kernel, s.skip_kernel) for s in arch.stages] == \
               [(s.blocks, s.conv_kernel, s.skip_kernel) for s in raw.stages]
        assert all(a.channels in space.channels and a.channels <= r.channels for a, r in zip(arch.stages, raw.stages))
        if count_params(arch) <= budget:  # what a trial trains is expressible: enqueueing it gives it back
            again = sample_arch(optuna.trial.FixedTrial(arch_to_params(arch, space)), space, budget)
            # (a stem as wide as stage 1 may come back as "same as C_1": the same network)
            assert again.stages == arch.stages and again.stem_channels == arch.stem_channels
            assert count_params(again) == count_params(arch)
        study.tell(trial, 0.0)
    assert over <= 60 // 4  # at most a quarter over budget (in fact none at these budgets)


def test_configs_within_budget_are_left_exactly_as_drawn():
    for arch in PRESETS.values():
        n = count_params(arch)
        assert fit_to_budget(arch, ArchSpace().channels, n) is arch
        narrowed = fit_to_budget(arch, ArchSpace().channels, n // 2)
        assert count_params(narrowed) <= n // 2 < n


def test_short_runs_get_batch_sizes_they_can_fill_and_a_usable_ema():
    default = RecipeSpace()
    assert fit_recipe_space(default, 45_000, 20) == default  # a full-size study is unchanged
    small = fit_recipe_space(default, 8_000, 3)
    assert max(small.batch_sizes) <= 8_000 // MIN_STEPS_PER_EPOCH and len(small.batch_sizes) == 3
    factor = default.batch_sizes[-1] // small.batch_sizes[-1]
    assert small.lr["sgd"] == pytest.approx(tuple(v / factor for v in default.lr["sgd"]))
    assert small.ema_decays == (0.0, 0.99)  # 0.999 averages over 1000 steps: longer than the whole run
