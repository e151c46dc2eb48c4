"""Sampling architectures from the declared space with Optuna."""
from __future__ import annotations

import json

import optuna
import pytest
import torch

from objectives import build, count_params
from objectives.space import ArchSpace, SearchSpace, pool_choices, sample_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled(space: ArchSpace, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield trial, sample_arch(trial, space)
        study.tell(trial, 0.0)


def test_samples_stay_in_declared_ranges():
    space = ArchSpace()
    seen_n = set()
    for trial, arch in sampled(space, 300):
        n = arch.num_stages
        seen_n.add(n)
        assert space.num_stages[0] <= n <= space.num_stages[1]
        assert arch.pool_kernel in pool_choices(n)
        for s in arch.stages:
            assert space.blocks[0] <= s.blocks <= space.blocks[1]
            assert s.channels in space.channels and s.conv_kernel in space.conv_kernels
            assert s.skip_kernel in space.skip_kernels
        assert arch.activation in space.activations and arch.se_ratio in space.se_ratios
        assert space.block_dropout[0] <= arch.block_dropout <= space.block_dropout[1]
        # Parameters of stages beyond N are not sampled at all (conditional space).
        assert all(f"stage{i}_blocks" not in trial.params for i in range(n + 1, 6))
    assert seen_n == set(range(space.num_stages[0], space.num_stages[1] + 1))


def test_sampled_counts_equal_built_models():
    for _, arch in sampled(ArchSpace(), 500, seed=1):
        with torch.device("meta"):
            assert count_params(arch) == sum(p.numel() for p in build(arch).parameters())


def test_fixed_ranges_pin_the_sample():
    space = ArchSpace(num_stages=(2, 2), blocks=(2, 2), channels=(24,), conv_kernels=(5,), skip_kernels=(3,),
                      stem_kernels=(3,), stem_widths=(None,), stem_se_ratios=(0,), se_ratios=(0,),
                      activations=("silu",), block_dropout=(0.0, 0.0), head_dropout=(0.1, 0.1))
    _, arch = next(sampled(space, 1))
    assert [(s.blocks, s.channels, s.conv_kernel, s.skip_kernel) for s in arch.stages] == [(2, 24, 5, 3)] * 2
    assert arch.activation == "silu" and arch.head_dropout == 0.1


def test_space_json_round_trip_and_errors():
    space = SearchSpace(arch=ArchSpace(channels=(16, 32), activations=("relu",)))
    assert SearchSpace.from_json(json.dumps(space.to_dict())) == space
    assert SearchSpace.from_dict({"arch": {"blocks": [2, 3]}}).arch.blocks == (2, 3)  # the rest: defaults
    with pytest.raises(ValueError, match="space.num_stages"):
        ArchSpace(num_stages=(0, 7))
    with pytest.raises(ValueError, match="space.conv_kernels"):
        ArchSpace(conv_kernels=(2, 3))
    with pytest.raises(ValueError, match="space.activations"):
        ArchSpace(activations=("tanh",))
    with pytest.raises(ValueError, match="unknown field"):
        ArchSpace.from_dict({"width": [1, 2]})
    with pytest.raises(ValueError, match="space.blocks"):
        ArchSpace(blocks=(3, 1))
