"""Learning-rate schedules as one pure function of the step, for LambdaLR.

Stepped every batch. With T = epochs * steps_per_epoch and W = round(warmup_fraction * T):
- onecycle: rises linearly from 0.1 to 1 over W steps, then falls linearly to 0 at step T;
- cosine:   rises linearly from 1/W to 1 over W steps, then half a cosine down to 0 at step T;
- step:     step_gamma ** (epoch // step_every_epochs)   (StepLR);
- multistep: step_gamma once at 50% and again at 75% of the epochs (He et al. 2016's CIFAR
            schedule, MultiStepLR), so it keeps its shape at any length;
- constant: 1.
"""
from __future__ import annotations

import math

from .recipe import Recipe


def lr_factor(recipe: Recipe, steps_per_epoch: int, step: int) -> float:
    total = recipe.epochs * steps_per_epoch
    warmup = round(recipe.warmup_fraction * total)
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "step":
        return recipe.step_gamma ** ((step // steps_per_epoch) // recipe.step_every_epochs)
    if recipe.schedule == "multistep":
        epoch = step // steps_per_epoch
        return recipe.step_gamma ** sum(epoch >= m for m in multistep_milestones(recipe.epochs))
    if step < warmup:
        start = 0.1 if recipe.schedule == "onecycle" else 0.0
        return start + (1.0 - start) * (step + (recipe.schedule == "cosine")) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if recipe.schedule == "onecycle":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


MULTISTEP_FRACTIONS = (0.5, 0.75)


def multistep_milestones(epochs: int) -> tuple[int, ...]:
    """The epochs at which a multistep schedule multiplies the rate by step_gamma."""
    return tuple(max(1, round(f * epochs)) for f in MULTISTEP_FRACTIONS)
