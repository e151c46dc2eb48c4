"""Learning-rate schedules: one registry entry each, a pure function of the step for LambdaLR.

Stepped every batch. With T = epochs * steps_per_epoch and W = round(warmup_fraction * T):
- onecycle: rises linearly from 0.1 to 1 over W steps, then falls linearly to 0 at step T;
- cosine:   rises linearly from 1/W to 1 over W steps, then half a cosine down to 0 at step T;
- step:     step_gamma ** (epoch // step_every_epochs)   (StepLR);
- multistep: step_gamma once at 50% and again at 75% of the epochs (He et al. 2016's CIFAR
            schedule, MultiStepLR), so it keeps its shape at any length;
- constant: 1.
Like the optimizers (optimizers.py), a schedule is declared here only: recipe validation and
the trainer read SCHEDULES, so adding one is one function and one entry.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # recipe.py reads the registry's names; only the type comes back here
    from .recipe import Recipe

MULTISTEP_FRACTIONS = (0.5, 0.75)


def multistep_milestones(epochs: int) -> tuple[int, ...]:
    """The epochs at which a multistep schedule multiplies the rate by step_gamma."""
    return tuple(max(1, round(f * epochs)) for f in MULTISTEP_FRACTIONS)


def _constant(recipe: Recipe, steps_per_epoch: int, step: int) -> float:
    return 1.0


def _step(recipe: Recipe, steps_per_epoch: int, step: int) -> float:
    return recipe.step_gamma ** ((step // steps_per_epoch) // recipe.step_every_epochs)


def _multistep(recipe: Recipe, steps_per_epoch: int, step: int) -> float:
    epoch = step // steps_per_epoch
    return recipe.step_gamma ** sum(epoch >= m for m in multistep_milestones(recipe.epochs))


def _warmup_then(decay: Callable[[float], float], start: float, offset: int):
    """Linear warm-up from `start` over W steps (the step counted from `offset`), then
    `decay(progress)` with progress going 0 -> 1 over the remaining steps."""
    def factor(recipe: Recipe, steps_per_epoch: int, step: int) -> float:
        total = recipe.epochs * steps_per_epoch
        warmup = round(recipe.warmup_fraction * total)
        if step < warmup:
            return start + (1.0 - start) * (step + offset) / warmup
        return decay(min(1.0, (step - warmup) / max(1, total - warmup)))
    return factor


SCHEDULES: dict[str, Callable[[Recipe, int, int], float]] = {
    "onecycle": _warmup_then(lambda progress: 1.0 - progress, start=0.1, offset=0),
    "cosine": _warmup_then(lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)), start=0.0, offset=1),
    "step": _step,
    "constant": _constant,
    "multistep": _multistep,
}


def lr_factor(recipe: Recipe, steps_per_epoch: int, step: int) -> float:
    return SCHEDULES[recipe.schedule](recipe, steps_per_epoch, step)
