"""Random valid architectures for property tests: wider than the default search
space (every kernel, activation, block type, SE and stem option, block types mixed
across stages), but narrow enough to build fast."""
from __future__ import annotations

import random

from objectives.architecture import ACTIVATIONS, BLOCK_TYPES, ArchConfig, StageConfig
from objectives.space import pool_choices


def random_arch(rng: random.Random, block_types: tuple[str, ...] = BLOCK_TYPES) -> ArchConfig:
    n = rng.randint(1, 5)
    stages = tuple(StageConfig(blocks=rng.randint(1, 3), channels=rng.choice([1, 3, 8, 16, 24, 33, 64]),
                               conv_kernel=rng.choice([1, 3, 5, 7]), skip_kernel=rng.choice([1, 3, 5]),
                               block=rng.choice(block_types))
                   for _ in range(n))
    return ArchConfig(
        stages=stages,
        pool_kernel=rng.choice(pool_choices(n)),
        stem_kernel=rng.choice([1, 3, 5, 7]),
        stem_width=rng.choice([None, 1, 8, 16, 64]),
        stem_se_ratio=rng.choice([0, 0, 1, 4, 16]),
        se_ratio=rng.choice([0, 0, 2, 8, 16, 64]),
        activation=rng.choice(ACTIVATIONS),
        block_dropout=rng.choice([0.0, 0.2]),
        head_dropout=rng.choice([0.0, 0.5]),
        num_classes=rng.choice([10, 10, 100]),
    )
