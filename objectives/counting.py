"""Exact, analytic size and cost of an ArchConfig, without building the model.

count_params counts every trainable parameter: conv weights (convs carry no
bias), both BatchNorm affine vectors (weight and bias; running statistics are
buffers, not parameters), skip projections (conv + BN), SE blocks (two biased
1x1 convs) and the classifier (weight and bias). It equals
sum(p.numel() for p in build(arch).parameters()) for every valid config.

count_macs counts multiply-accumulates per 32x32 image of every conv (SE
included) and of the classifier, the operations torch's FlopCounterMode
counts (it reports 2 FLOPs per MAC); BatchNorm, activations, pooling and
additions are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .architecture import INPUT_CHANNELS, INPUT_SIDE, ArchConfig, se_hidden


@dataclass(frozen=True)
class Conv:
    c_in: int
    c_out: int
    kernel: int
    out_side: int
    bias: bool = False
    batchnorm: bool = True


def _se(channels: int, ratio: int) -> list[Conv]:
    h = se_hidden(channels, ratio)
    return [Conv(channels, h, 1, 1, bias=True, batchnorm=False),
            Conv(h, channels, 1, 1, bias=True, batchnorm=False)]


def convs(arch: ArchConfig) -> Iterator[Conv]:
    """Every conv of the network in build order, with its output side."""
    side, c_in = INPUT_SIDE, arch.stem_channels
    yield Conv(INPUT_CHANNELS, c_in, arch.stem_kernel, side)
    if arch.stem_se_ratio:
        yield from _se(c_in, arch.stem_se_ratio)
    for i, s in enumerate(arch.stages):
        for b in range(s.blocks):
            stride = 2 if (i > 0 and b == 0) else 1
            side //= stride
            yield Conv(c_in, s.channels, s.conv_kernel, side)
            yield Conv(s.channels, s.channels, s.conv_kernel, side)
            if arch.se_ratio:
                yield from _se(s.channels, arch.se_ratio)
            if stride != 1 or c_in != s.channels:
                yield Conv(c_in, s.channels, s.skip_kernel, side)
            c_in = s.channels


def count_params(arch: ArchConfig) -> int:
    """Trainable parameters of build(arch); see the module docstring for what counts."""
    total = 0
    for c in convs(arch):
        total += c.kernel * c.kernel * c.c_in * c.c_out
        total += c.c_out if c.bias else 0
        total += 2 * c.c_out if c.batchnorm else 0
    return total + arch.fc_in_features * arch.num_classes + arch.num_classes


def count_macs(arch: ArchConfig) -> int:
    """Multiply-accumulates per image for all convs and the classifier."""
    conv_macs = sum(c.kernel * c.kernel * c.c_in * c.c_out * c.out_side * c.out_side
                    for c in convs(arch))
    return conv_macs + arch.fc_in_features * arch.num_classes


class OverBudgetError(ValueError):
    """A config with more trainable parameters than the budget allows."""


def check_budget(arch: ArchConfig, budget: int) -> int:
    """Return the parameter count, or raise OverBudgetError saying count and budget."""
    n = count_params(arch)
    if n > budget:
        raise OverBudgetError(f"over budget: {n:,} trainable parameters > budget {budget:,}")
    return n
