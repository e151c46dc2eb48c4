"""Published CIFAR-10 ResNets we start from, as data.

Each reproduces the trainable parameter count its source reports; the tests are
parametrised over this dict, so a preset added here is checked for free.
"""
from __future__ import annotations

from .architecture import ArchConfig, StageConfig


def _stages(blocks, channels, conv_kernel=3, skip_kernel=1):
    return tuple(StageConfig(b, c, conv_kernel, skip_kernel) for b, c in zip(blocks, channels))


PRESETS: dict[str, ArchConfig] = {
    # "ResNet on Steroids" report: ResNet-24, 4,935,242 parameters.
    "resnet24-steroids": ArchConfig(stages=_stages((3, 3, 2, 3), (64, 128, 128, 256)), pool_kernel=4),
    # kuangliu/pytorch-cifar ResNet with one block per stage ("ResNet9"), 4,903,242.
    "resnet9-kuangliu": ArchConfig(stages=_stages((1, 1, 1, 1), (64, 128, 256, 512)), pool_kernel=4),
    # Rawat et al.: 3 stages, one SE block (ratio 16) after a 64-wide stem, global pool; 4,697,742.
    "se-resnet-rawat": ArchConfig(stages=_stages((4, 4, 3), (64, 128, 256)), pool_kernel=8,
                                  stem_se_ratio=16),
    # "Nightshade": 16-wide stem, 3x3 projections wherever shapes change, heavy dropout; 4,709,914.
    "resnet-nightshade": ArchConfig(stages=_stages((3, 3, 3, 3), (32, 64, 128, 256), skip_kernel=3),
                                    pool_kernel=4, stem_width=16, block_dropout=0.6),
    # He et al. (2016) CIFAR ResNet-20 with 1x1 projection shortcuts (option B): the small
    # reference (the paper's option A, zero-padded shortcuts, reports 0.27M).
    "resnet20-he": ArchConfig(stages=_stages((3, 3, 3), (16, 32, 64)), pool_kernel=8),
    # kuangliu ResNet-18: 11,173,962 parameters, over the default 5M budget.
    "resnet18-kuangliu": ArchConfig(stages=_stages((2, 2, 2, 2), (64, 128, 256, 512)), pool_kernel=4),
}


def get_preset(name: str) -> ArchConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
