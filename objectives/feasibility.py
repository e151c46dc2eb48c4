"""The smallest architecture a space can produce, so a budget that nothing in the space
fits is refused when the study is created instead of sampling forever.

Parameters grow with every block, kernel and channel count, whatever the block type, and an
SE block is cheapest at its largest ratio (or absent), so the smallest model uses the fewest
blocks, the smallest kernels and the largest pool, with every stage at the narrowest width,
except that stage 1 may be cheaper at the stem's width (no projection on its skip path):
those few combinations are counted exactly. The block type of a stage changes only that
stage's parameters (and, for the last stage, what comes before the pool), never another
stage's, so the cheapest type is found stage by stage, each counted exactly.
"""
from __future__ import annotations

import dataclasses

from .architecture import ArchConfig, StageConfig
from .counting import count_params
from .space import ArchSpace, pool_choices


def smallest_arch(space: ArchSpace) -> ArchConfig:
    """The architecture of `space` with the fewest trainable parameters."""
    def se(ratios: tuple[int, ...]) -> int:
        return 0 if 0 in ratios else max(ratios)
    narrowest = min(space.channels)
    candidates = []
    for n in range(space.num_stages[0], space.num_stages[1] + 1):
        for stem_width in space.stem_widths:
            for first in space.channels:
                stages = [StageConfig(space.blocks[0], first if i == 0 else narrowest, min(space.conv_kernels),
                                      min(space.skip_kernels), space.block_types[0]) for i in range(n)]
                arch = ArchConfig(
                    stages=tuple(stages), pool_kernel=max(pool_choices(n)), stem_kernel=min(space.stem_kernels),
                    stem_width=stem_width, stem_se_ratio=se(space.stem_se_ratios), se_ratio=se(space.se_ratios),
                    activation=space.activations[0])
                candidates.append(_cheapest_block_types(arch, space.block_types))
    return min(candidates, key=count_params)


def _cheapest_block_types(arch: ArchConfig, block_types: tuple[str, ...]) -> ArchConfig:
    """`arch` with each stage's block type the cheapest of `block_types` (stages are independent)."""
    if len(block_types) == 1:
        return arch
    for i in range(arch.num_stages):
        options = []
        for block in block_types:
            stages = list(arch.stages)
            stages[i] = dataclasses.replace(stages[i], block=block)
            options.append(dataclasses.replace(arch, stages=tuple(stages)))
        arch = min(options, key=count_params)
    return arch


def check_space_fits(space: ArchSpace, budget: int) -> int:
    """The smallest model's parameter count; ValueError if even that is over `budget`."""
    n = count_params(smallest_arch(space))
    if n > budget:
        raise ValueError(f"budget: {budget:,} parameters is below the smallest model of this space ({n:,}); "
                         f"raise --budget or narrow the space")
    return n
