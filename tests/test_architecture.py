"""The architecture space: presets, exact parameter and MAC counts, validation, JSON."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from objectives import PRESETS, ArchConfig, StageConfig, build, check_budget, count_macs, count_params
from objectives.counting import OverBudgetError
from tests.archgen import random_arch

# Trainable parameter counts as the published sources report them.
PUBLISHED = {
    "resnet24-steroids": 4_935_242,
    "resnet9-kuangliu": 4_903_242,
    "se-resnet-rawat": 4_697_742,
    "resnet-nightshade": 4_709_914,
    "resnet18-kuangliu": 11_173_962,
    "resnet20-he": 272_474,  # He et al. report 0.27M
}


def built_params(arch: ArchConfig, device: str = "meta") -> int:
    with torch.device(device):
        return sum(p.numel() for p in build(arch).parameters() if p.requires_grad)


def test_every_preset_has_a_published_count():
    assert set(PRESETS) == set(PUBLISHED)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_reproduces_published_count(name):
    arch = PRESETS[name]
    assert count_params(arch) == PUBLISHED[name]
    assert built_params(arch, "cpu") == PUBLISHED[name]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_forward_backward(name):
    model = build(PRESETS[name])
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_budget_rejects_resnet18_with_count_and_budget():
    with pytest.raises(OverBudgetError, match=r"11,173,962 .*5,000,000"):
        check_budget(PRESETS["resnet18-kuangliu"], 5_000_000)
    assert check_budget(PRESETS["resnet24-steroids"], 5_000_000) == 4_935_242


def test_hand_counted_tiny_network():
    # stem 3x3 3->4 + BN: 108 + 8; stage 1 (identity skip): two 3x3 4->4 convs + BNs: 2*(144 + 8);
    # stage 2: 3x3 4->8 + BN (288 + 16), 3x3 8->8 + BN (576 + 16), 1x1 skip 4->8 + BN (32 + 16);
    # pool 16x16 map by 8 -> 2x2, fc 8*4 -> 10: 320 + 10.
    arch = ArchConfig(stages=(StageConfig(1, 4), StageConfig(1, 8)), pool_kernel=8)
    expected = 116 + 304 + 304 + 592 + 48 + 330
    assert count_params(arch) == expected == built_params(arch, "cpu")


def test_hand_counted_se_and_stem_projection():
    # stem 5x5 3->2 + BN: 150 + 4, stem SE ratio 2 on 2 channels: 1x1 2->1 (+1 bias), 1->2 (+2): 7;
    # stage 1 changes width 2->4, so a 3x3 projection: 72 + 8; block convs 3x3: 72 + 8, 144 + 8;
    # block SE ratio 4 on 4 channels: 4->1 (+1), 1->4 (+4): 13; global pool (32), fc 4 -> 10: 50.
    arch = ArchConfig(stages=(StageConfig(1, 4, 3, 3),), pool_kernel=32, stem_kernel=5, stem_width=2,
                      stem_se_ratio=2, se_ratio=4)
    assert count_params(arch) == 154 + 7 + 80 + 80 + 152 + 13 + 50 == built_params(arch, "cpu")


def test_count_matches_built_model_on_500_random_configs():
    rng = random.Random(1234)
    for _ in range(500):
        arch = random_arch(rng)
        assert count_params(arch) == built_params(arch), arch


def test_macs_match_torch_flop_counter():
    rng = random.Random(7)
    archs = [PRESETS["resnet9-kuangliu"], PRESETS["se-resnet-rawat"], PRESETS["resnet-nightshade"]]
    archs += [random_arch(rng) for _ in range(6)]
    for arch in archs:
        model = build(arch).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        assert 2 * count_macs(arch) == counter.get_total_flops(), arch


def test_json_round_trip():
    rng = random.Random(3)
    for _ in range(50):
        arch = random_arch(rng)
        assert ArchConfig.from_json(arch.to_json()) == arch
    assert ArchConfig.from_dict(PRESETS["resnet-nightshade"].to_dict()) == PRESETS["resnet-nightshade"]


BASE = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32)), pool_kernel=4)


@pytest.mark.parametrize("change, field", [
    (dict(pool_kernel=3), "pool_kernel"),           # 3 does not divide the 16x16 final map
    (dict(pool_kernel=32), "pool_kernel"),
    (dict(stages=(StageConfig(0, 16),)), "stages[1].blocks"),
    (dict(stages=(StageConfig(1, 16, conv_kernel=4),)), "stages[1].conv_kernel"),
    (dict(stages=(StageConfig(1, 16), StageConfig(1, 32, skip_kernel=2))), "stages[2].skip_kernel"),
    (dict(stages=(StageConfig(1, 0),)), "stages[1].channels"),
    (dict(stages=()), "stages"),
    (dict(stages=tuple(StageConfig(1, 8) for _ in range(6))), "stages"),
    (dict(stem_kernel=2), "stem_kernel"),
    (dict(stem_width=0), "stem_width"),
    (dict(activation="tanh"), "activation"),
    (dict(block_dropout=1.0), "block_dropout"),
    (dict(head_dropout=-0.1), "head_dropout"),
    (dict(se_ratio=-1), "se_ratio"),
    (dict(num_classes=1), "num_classes"),
])
def test_invalid_config_names_the_field(change, field):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(BASE, **change)
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_from_json_rejects_unknown_and_missing_fields():
    with pytest.raises(ValueError, match="unknown field"):
        ArchConfig.from_dict({**BASE.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="pool_kernel"):
        ArchConfig.from_dict({"stages": [{"blocks": 1, "channels": 8}]})
    with pytest.raises(ValueError, match="not valid JSON"):
        ArchConfig.from_json("{")
