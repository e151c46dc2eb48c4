"""Make sampled configs fit the study: widths scaled down to the parameter budget, batch
sizes and learning rates scaled to the training-set size.

Why scale rather than reject: the channel lists must reach the published designs (512 wide
stages at 5M), but drawn independently per stage they make most samples several times
over the budget (72% at 5M, 96% at 1M, 100% at 250k of 50 random samples each;
benchmarks/results/feasible_fraction_unfitted.json). An
over-budget sample is shrunk instead: every stage width is multiplied by one common factor
and rounded down to a width of the space's list, the largest such factor that fits. So the
relative shape the sampler chose survives, the result still uses widths from the list
(every produced config can be enqueued again), and a config that already fits, such as a
preset, is left exactly as it is.
"""
from __future__ import annotations

import dataclasses

from .architecture import ArchConfig
from .counting import count_macs, count_params
from .optimizers import get_optimizer
from .recipe import RecipeSpace

SHRINK_STEP = 0.9   # each try narrows every stage by 10% more
MIN_STEPS_PER_EPOCH = 25  # fewer optimizer steps per epoch and short trials barely learn


def fit_to_budget(arch: ArchConfig, widths: tuple[int, ...], budget: int, max_macs: int | None = None) -> ArchConfig:
    """`arch`, or its widest version within `budget` (and `max_macs` multiply-accumulates per image,
    when given) whose stage widths are all in `widths` (each at most its sampled width). If even
    the narrowest is over, the narrowest."""
    def fits(a: ArchConfig) -> bool:
        return count_params(a) <= budget and (max_macs is None or count_macs(a) <= max_macs)
    if fits(arch):
        return arch
    ordered = sorted(widths)
    scale = 1.0
    while True:
        scale *= SHRINK_STEP
        # never wider than drawn: a preset's width below the list's narrowest stays as it is
        stages = tuple(dataclasses.replace(s, channels=min(s.channels, _round_down(s.channels * scale, ordered)))
                       for s in arch.stages)
        candidate = dataclasses.replace(arch, stages=stages)
        if fits(candidate) or all(s.channels <= ordered[0] for s in stages):
            return candidate


def _round_down(width: float, ordered: list[int]) -> int:
    below = [w for w in ordered if w <= width]
    return below[-1] if below else ordered[0]


def batch_scale(batch_sizes: tuple[int, ...], n_train: int) -> int:
    """The power of two to divide the batch sizes by so that the largest still gives
    MIN_STEPS_PER_EPOCH steps per epoch on `n_train` images (1: they already do)."""
    factor = 1
    while max(batch_sizes) // factor > max(1, n_train // MIN_STEPS_PER_EPOCH) and min(batch_sizes) // factor > 8:
        factor *= 2
    return factor


def fit_recipe_space(space: RecipeSpace, n_train: int, epochs: int) -> RecipeSpace:
    """`space` fitted to a run of `epochs` epochs on `n_train` images: batch sizes
    divided by `batch_scale`, with the peak learning rates scaled alike (linearly for SGD, as in
    Goyal et al.; by the square root for the adaptive optimizers), and only the weight-EMA decays
    whose horizon 1 / (1 - decay) is at most half the run's steps (a longer one would evaluate
    weights still close to the initial ones). The default space at full size is unchanged."""
    factor = batch_scale(space.batch_sizes, n_train)
    batch_sizes = tuple(sorted({max(1, b // factor) for b in space.batch_sizes}))
    lr = {name: tuple(v / (factor if get_optimizer(name).linear_lr_scaling else factor ** 0.5) for v in lo_hi)
          for name, lo_hi in space.lr.items()}
    steps = epochs * (n_train // min(batch_sizes))
    emas = tuple(d for d in space.ema_decays if d == 0 or 1 / (1 - d) <= steps / 2) or (0.0,)
    return dataclasses.replace(space, batch_sizes=batch_sizes, lr=lr, ema_decays=emas)
