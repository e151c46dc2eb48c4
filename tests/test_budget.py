"""Samples fit the study: widths narrowed to the budget, recipe ranges fitted to short runs."""
from __future__ import annotations

import itertools

import optuna
import pytest

from objectives import PRESETS, ArchConfig, StageConfig, count_params
from objectives.architecture import BLOCK_TYPES
from objectives.budget import MIN_STEPS_PER_EPOCH, fit_recipe_space, fit_to_budget
from objectives.feasibility import smallest_arch
from objectives.recipe import RecipeSpace
from objectives.space import ArchSpace, arch_to_params, pool_choices, sample_arch

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
        assert [(s.blocks, s.conv_kernel, s.skip_kernel, s.block) for s in arch.stages] == \
               [(s.blocks, s.conv_kernel, s.skip_kernel, s.block) for s in raw.stages]
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


def test_smallest_arch_is_the_minimum_over_the_whole_space_of_every_block_type():
    # Every architecture of a small space, counted: the smallest is exactly the minimum, block types
    # mixed per stage, SE at its cheapest ratio, stage 1 at the stem's width or not.
    space = ArchSpace(num_stages=(1, 2), blocks=(1, 2), channels=(4, 16), conv_kernels=(1, 3), skip_kernels=(3,),
                      stem_kernels=(3,), stem_widths=(None, 4), stem_se_ratios=(0,), se_ratios=(2, 4),
                      activations=("relu",), block_dropout=(0.0, 0.0), head_dropout=(0.0, 0.0))
    assert space.block_types == BLOCK_TYPES
    stage_options = [StageConfig(b, c, f, 3, t) for b, c, f, t in
                     itertools.product((1, 2), (4, 16), (1, 3), BLOCK_TYPES)]
    counts = [count_params(ArchConfig(stages=stages, pool_kernel=pool, stem_width=stem, se_ratio=se))
              for n in (1, 2) for stages in itertools.product(stage_options, repeat=n)
              for pool in pool_choices(n) for stem in (None, 4) for se in (2, 4)]
    assert count_params(smallest_arch(space)) == min(counts)


def test_short_runs_get_batch_sizes_they_can_fill_and_a_usable_ema():
    default = RecipeSpace()
    assert fit_recipe_space(default, 45_000, 20) == default  # a full-size study is unchanged
    small = fit_recipe_space(default, 8_000, 3)
    assert max(small.batch_sizes) <= 8_000 // MIN_STEPS_PER_EPOCH and len(small.batch_sizes) == 3
    factor = default.batch_sizes[-1] // small.batch_sizes[-1]
    assert small.lr["sgd"] == pytest.approx(tuple(v / factor for v in default.lr["sgd"]))
    assert small.ema_decays == (0.0, 0.99)  # 0.999 averages over 1000 steps: longer than the whole run
