"""The architecture space: presets, exact parameter and MAC counts, validation, JSON."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from objectives import PRESETS, ArchConfig, StageConfig, build, check_budget, count_macs, count_params
from objectives.activations import ACTIVATIONS, make_activation
from objectives.architecture import BLOCK_TYPES
from objectives.blocks import BLOCKS
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


def test_hand_counted_bottleneck():
    # stem 3x3 3->8 + BN: 216 + 16. Stage 1 (8 -> 8, identity skip), inner width 8/4 = 2:
    # 1x1 8->2 + BN (16 + 4), 3x3 2->2 + BN (36 + 4), 1x1 2->8 + BN (16 + 16). Stage 2 (8 -> 10,
    # stride 2), inner width 10/4 rounded up = 3: 1x1 8->3 + BN (24 + 6), 3x3 3->3 + BN (81 + 6),
    # 1x1 3->10 + BN (30 + 20), 1x1 projection 8->10 + BN (80 + 20); 16x16 map pooled by 8, fc 40 -> 10.
    arch = ArchConfig(stages=(StageConfig(1, 8, block="bottleneck"), StageConfig(1, 10, block="bottleneck")),
                      pool_kernel=8, stem_width=8)
    assert count_params(arch) == 232 + 92 + (30 + 87 + 50 + 100) + 410 == built_params(arch, "cpu")


def test_hand_counted_preact_and_its_final_norm():
    # stem 3x3 3->4 + BN: 116. Stage 1 (identity): BN(4) 8, 3x3 4->4 144, BN(4) 8, 3x3 4->4 144.
    # Stage 2 (4 -> 8, stride 2): BN(4) 8, 3x3 4->8 288, BN(8) 16, 3x3 8->8 576, and a bare 1x1
    # projection 4->8 (32: it reads the pre-activated input, no BN); then BN(8) before the pool: 16;
    # global pool, fc 8 -> 10: 90.
    preact = ArchConfig(stages=(StageConfig(1, 4, block="preact"), StageConfig(1, 8, block="preact")), pool_kernel=16)
    assert count_params(preact) == 116 + 304 + 920 + 16 + 90 == built_params(preact, "cpu")
    # A basic last stage ends in its own activation: no BN before the pool. Stage 2 basic: 3x3 4->8 + BN
    # (288 + 16), 3x3 8->8 + BN (576 + 16), 1x1 projection 4->8 + BN (32 + 16).
    mixed = ArchConfig(stages=(StageConfig(1, 4, block="preact"), StageConfig(1, 8)), pool_kernel=16)
    assert count_params(mixed) == 116 + 304 + 944 + 90 == built_params(mixed, "cpu")


def test_bottleneck_and_preact_reproduce_published_counts():
    # kuangliu ResNet-50: bottleneck stages 3, 4, 6, 3 of output width 256..2048 (inner 64..512)
    # behind a 64-wide stem: 23,520,842 parameters.
    resnet50 = ArchConfig(stages=tuple(StageConfig(b, c, block="bottleneck") for b, c in
                                       zip((3, 4, 6, 3), (256, 512, 1024, 2048))), pool_kernel=4, stem_width=64)
    assert count_params(resnet50) == 23_520_842 == built_params(resnet50)
    # kuangliu PreActResNet-18: 11,171,146; ours also has the stem's BN (2 * 64) and the BN before
    # the pool (2 * 512) that He et al. (2016) put there and kuangliu leaves out.
    preact18 = ArchConfig(stages=tuple(StageConfig(2, c, block="preact") for c in (64, 128, 256, 512)), pool_kernel=4)
    assert count_params(preact18) == 11_171_146 + 128 + 1024 == built_params(preact18)


# Every block type alone, and all of them mixed across stages.
BLOCK_MIXES = [(b,) for b in BLOCK_TYPES] + [BLOCK_TYPES]


@pytest.mark.parametrize("block_types", BLOCK_MIXES, ids="+".join)
def test_count_matches_built_model_on_random_configs(block_types):
    rng = random.Random(1234)
    for _ in range(125):
        arch = random_arch(rng, block_types)
        assert count_params(arch) == built_params(arch), arch


def flop_counted_macs(arch: ArchConfig) -> int:
    model = build(arch).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    return counter.get_total_flops() // 2  # it counts 2 FLOPs per multiply-accumulate


@pytest.mark.parametrize("block_types", BLOCK_MIXES, ids="+".join)
def test_macs_match_torch_flop_counter(block_types):
    rng = random.Random(7)
    for arch in [random_arch(rng, block_types) for _ in range(3)]:
        assert count_macs(arch) == flop_counted_macs(arch), arch


@pytest.mark.parametrize("name", ["resnet9-kuangliu", "se-resnet-rawat", "resnet-nightshade"])
def test_preset_macs_match_torch_flop_counter(name):
    assert count_macs(PRESETS[name]) == flop_counted_macs(PRESETS[name])


@pytest.mark.parametrize("block", BLOCK_TYPES)
def test_every_block_type_trains(block):
    # Stride, projections, SE and dropout inside each block type, at one and two blocks per stage.
    arch = ArchConfig(stages=(StageConfig(2, 8, block=block), StageConfig(1, 16, 5, 3, block=block)), pool_kernel=4,
                      se_ratio=4, block_dropout=0.1, head_dropout=0.1)
    model = build(arch)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_maps_zero_to_zero_and_a_fresh_block_is_the_identity(name):
    assert make_activation(name)(torch.zeros(3)).abs().sum() == 0
    # identity shortcuts only (stage 1 at the stem's width): a fresh network's blocks pass the stem through
    arch = ArchConfig(stages=(StageConfig(2, 8, block="preact"),), pool_kernel=32, activation=name)
    model, x = build(arch).eval(), torch.randn(2, 3, 32, 32)
    stem = model.stem(x)
    assert torch.equal(model.stages(stem), stem)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_block_type_starts_as_the_identity_and_its_whole_branch_trains(block, name):
    # A block starting as the identity must not start dead: zeroing a BN that feeds an
    # activation (pre-activation's inner BN) leaves ReLU with no gradient, forever.
    arch = ArchConfig(stages=(StageConfig(1, 8, block=block), StageConfig(1, 16, block=block)), pool_kernel=16,
                      activation=name, se_ratio=2)
    torch.manual_seed(0)
    model = build(arch).train()
    first = model.stages[0][0]
    with torch.no_grad():  # the residual branch of a fresh block outputs exactly zero
        h = _run(first, first.pre, model.stem(torch.randn(2, 3, 32, 32)))
        assert _run(first, first.residual, h).abs().max() == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    dead = [n for n, p in first.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"{block}/{name}: no gradient reaches {dead}"


def _run(block, names, x):
    for name in names:
        x = getattr(block, name)(x)
    return x


def test_unknown_activation_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match="activation: must be one of relu, "):
        make_activation("tanh")


def test_basic_blocks_keep_the_state_dict_names_of_earlier_model_files():
    arch = ArchConfig(stages=(StageConfig(1, 4), StageConfig(1, 8)), pool_kernel=8, stem_se_ratio=2, se_ratio=2)
    with torch.device("meta"):
        names = {k.rsplit(".", 1)[0] for k in build(arch).state_dict()}
    conv_bn = lambda prefix: {f"{prefix}.0", f"{prefix}.1"}  # noqa: E731
    se = lambda prefix: {f"{prefix}.reduce", f"{prefix}.expand"}  # noqa: E731
    assert names == {"stem.0", "stem.1", *se("stem.3"), "fc",
                     *conv_bn("stages.0.0.conv1"), *conv_bn("stages.0.0.conv2"), *se("stages.0.0.se"),
                     *conv_bn("stages.1.0.conv1"), *conv_bn("stages.1.0.conv2"), *se("stages.1.0.se"),
                     *conv_bn("stages.1.0.shortcut")}
    # and an architecture stored before block types existed (no "block") is that network
    old = {"stages": [{"blocks": 1, "channels": 4}, {"blocks": 1, "channels": 8}], "pool_kernel": 8,
           "stem_se_ratio": 2, "se_ratio": 2}
    assert ArchConfig.from_dict(old) == arch


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
    (dict(stages=(StageConfig(1, 16, block="dense"),)), "stages[1].block"),
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
