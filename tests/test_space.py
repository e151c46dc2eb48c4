"""Sampling architectures from the declared space with Optuna."""
from __future__ import annotations

import json

import optuna
import pytest
import torch

from objectives import ArchConfig, StageConfig, build, count_params
from objectives.architecture import BLOCK_TYPES
from objectives.space import ArchSpace, SearchSpace, arch_to_params, pool_choices, sample_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled(space: ArchSpace, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield trial, sample_arch(trial, space)
        study.tell(trial, 0.0)


def test_samples_stay_in_declared_ranges():
    space = ArchSpace()
    seen_n, seen_blocks = set(), set()
    for trial, arch in sampled(space, 300):
        n = arch.num_stages
        seen_n.add(n)
        seen_blocks.update(s.block for s in arch.stages)
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
    assert seen_blocks == set(space.block_types) == set(BLOCK_TYPES)  # the default space searches every block type


def test_block_type_is_a_per_stage_choice():
    space = ArchSpace(num_stages=(3, 3), block_types=("bottleneck", "preact"))
    mixed = 0
    for trial, arch in sampled(space, 40):
        assert [s.block for s in arch.stages] == [trial.params[f"stage{i}_block_type"] for i in (1, 2, 3)]
        enqueued = arch_to_params(arch, space)  # an enqueued design keeps its block types
        assert all(enqueued[f"stage{i}_block_type"] == trial.params[f"stage{i}_block_type"] for i in (1, 2, 3))
        mixed += len({s.block for s in arch.stages}) > 1
    assert mixed > 0
    with pytest.raises(ValueError, match=r"stage1_block_type='basic' is outside this study's space"):
        arch_to_params(ArchConfig(stages=(StageConfig(1, 16),) * 3, pool_kernel=8), space)


def test_one_block_type_samples_no_parameter_as_before_block_types():
    # Studies stored before block types existed searched basic blocks under exactly these parameters.
    for trial, arch in sampled(ArchSpace(block_types=("basic",)), 20):
        assert not any(name.endswith("_block_type") for name in trial.params)
        assert {s.block for s in arch.stages} == {"basic"}


def test_sampled_counts_equal_built_models():
    # (tests/test_architecture.py checks more, narrower configs of every block type)
    for _, arch in sampled(ArchSpace(), 300, seed=1):
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
    assert SearchSpace().arch.block_types == BLOCK_TYPES


def test_a_space_stored_before_block_types_keeps_its_form_and_its_blocks():
    # `search create` compares the stored definition with the given one, and workers sample the
    # stored one: a space without block_types reads as basic blocks only and is written back as it was.
    stored = ArchSpace().to_dict()
    del stored["block_types"]
    space = ArchSpace.from_dict(stored)
    assert space.block_types == ("basic",) and space.to_dict() == stored
    assert ArchSpace.from_dict(ArchSpace().to_dict()) == ArchSpace()  # a new space keeps all its types
    with pytest.raises(ValueError, match="space.num_stages"):
        ArchSpace(num_stages=(0, 7))
    with pytest.raises(ValueError, match="space.conv_kernels"):
        ArchSpace(conv_kernels=(2, 3))
    with pytest.raises(ValueError, match="space.activations"):
        ArchSpace(activations=("tanh",))
    with pytest.raises(ValueError, match="space.block_types: must be one of basic, bottleneck, preact"):
        ArchSpace(block_types=("dense",))
    with pytest.raises(ValueError, match="space.block_types: must be a non-empty list"):
        ArchSpace(block_types=())
    with pytest.raises(ValueError, match="unknown field"):
        ArchSpace.from_dict({"width": [1, 2]})
    with pytest.raises(ValueError, match="space.blocks"):
        ArchSpace(blocks=(3, 1))
