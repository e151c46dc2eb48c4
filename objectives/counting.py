"""Exact, analytic size and cost of an ArchConfig, without building the model.

Both walk the network plan (`plan.py`) that `build` builds; what each layer counts is said
once, in `layers.py`. count_params counts every trainable parameter: conv weights (convs
carry no bias), both BatchNorm affine vectors (weight and bias; running statistics are
buffers, not parameters), skip projections, SE blocks (two biased 1x1 convs) and the
classifier (weight and bias). It equals sum(p.numel() for p in build(arch).parameters())
for every valid config.

count_macs counts multiply-accumulates per 32x32 image of every conv (SE included) and of
the classifier, the operations torch's FlopCounterMode counts (it reports 2 FLOPs per MAC);
BatchNorm, activations, pooling and additions are not counted.
"""
from __future__ import annotations

from .architecture import ArchConfig
from .plan import layers_with_sides


def count_params(arch: ArchConfig) -> int:
    """Trainable parameters of build(arch); see the module docstring for what counts."""
    return sum(layer.params for layer, _ in layers_with_sides(arch))


def count_macs(arch: ArchConfig) -> int:
    """Multiply-accumulates per image for all convs and the classifier."""
    return sum(layer.macs(side) for layer, side in layers_with_sides(arch))


class OverBudgetError(ValueError):
    """A config with more trainable parameters than the budget allows."""


def check_budget(arch: ArchConfig, budget: int) -> int:
    """Return the parameter count, or raise OverBudgetError saying count and budget."""
    n = count_params(arch)
    if n > budget:
        raise OverBudgetError(f"over budget: {n:,} trainable parameters > budget {budget:,}")
    return n
