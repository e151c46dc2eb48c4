"""The searchable ranges, declared once, and sampling from an Optuna trial.

`ArchSpace` holds the ranges of every architecture field. It is plain data
(JSON both ways) so a study stores it and every worker samples the same space.
Ranges are written `[low, high]` (inclusive); choices are lists.

Sampling is conditional: stage i's parameters exist only when N >= i, and the
pool kernel is drawn among the divisors of the final side S, which depends on N
(one parameter name per N, since an Optuna distribution may not change its
choices under one name).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .architecture import (ACTIVATIONS, BLOCK_TYPES, MAX_BLOCKS, MAX_CHANNELS, MAX_KERNEL, MAX_STAGES, ArchConfig,
                           StageConfig, fields_from_dict, final_side)
from .budget import fit_to_budget
from .checks import choice, is_int, low_high, non_empty_list, number, parse_json
from .recipe import RecipeSpace
from .trial_like import TrialLike, suggest_choice, suggest_range

RANGE_FIELDS = ("num_stages", "blocks", "block_dropout", "head_dropout")
# A space written before block types existed (every study stored until then) searched basic
# blocks only. It is read that way, and such a space is written without the field, so stored
# studies keep their stored form (`search create` compares it) and sample as they did.
LEGACY_BLOCK_TYPES = ("basic",)


@dataclass(frozen=True)
class ArchSpace:
    num_stages: tuple[int, int] = (3, 5)          # N; every stage after the first halves the side
    blocks: tuple[int, int] = (1, 4)              # B_i, residual blocks per stage
    channels: tuple[int, ...] = (16, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512)  # C_i
    conv_kernels: tuple[int, ...] = (3, 5)        # F_i; 7 rarely pays for its params at 32x32
    skip_kernels: tuple[int, ...] = (1, 3)        # K_i
    # Block type per stage (objectives/blocks.py): all of them, so a new study explores them.
    block_types: tuple[str, ...] = BLOCK_TYPES
    stem_kernels: tuple[int, ...] = (3, 5)
    stem_widths: tuple[int | None, ...] = (None, 16, 32, 64)  # None: same as C_1
    stem_se_ratios: tuple[int, ...] = (0, 16)     # 0: no SE after the stem
    se_ratios: tuple[int, ...] = (0, 8, 16)       # 0: no SE in the blocks
    activations: tuple[str, ...] = ACTIVATIONS
    block_dropout: tuple[float, float] = (0.0, 0.6)
    head_dropout: tuple[float, float] = (0.0, 0.5)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            where = f"space.{f.name}"
            value = low_high(where, getattr(self, f.name)) if f.name in RANGE_FIELDS else \
                non_empty_list(where, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        for v in self.num_stages:
            number("space.num_stages", v, 1, MAX_STAGES, integer=True)
        for v in self.blocks:
            number("space.blocks", v, 1, MAX_BLOCKS, integer=True)
        for name in ("block_dropout", "head_dropout"):
            for v in getattr(self, name):
                number(f"space.{name}", v, 0, 1, hi_open=True)
        for name in ("conv_kernels", "skip_kernels", "stem_kernels"):
            bad = [k for k in getattr(self, name) if not is_int(k) or not 1 <= k <= MAX_KERNEL or k % 2 == 0]
            if bad:
                raise ValueError(f"space.{name}: kernels must be odd integers in [1, {MAX_KERNEL}], got {bad}")
        for v in self.activations:
            choice("space.activations", v, ACTIVATIONS)
        for v in self.block_types:
            choice("space.block_types", v, BLOCK_TYPES)
        for name in ("channels", "stem_se_ratios", "se_ratios"):
            floor = 1 if name == "channels" else 0
            bad = [c for c in getattr(self, name) if not is_int(c) or not floor <= c <= MAX_CHANNELS]
            if bad:
                raise ValueError(f"space.{name}: must be integers in [{floor}, {MAX_CHANNELS:,}], got {bad}")
        bad = [w for w in self.stem_widths if w is not None and (not is_int(w) or not 1 <= w <= MAX_CHANNELS)]
        if bad:
            raise ValueError(f"space.stem_widths: must be integers in [1, {MAX_CHANNELS:,}] or null, got {bad}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not (f.name == "block_types" and self.block_types == LEGACY_BLOCK_TYPES)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchSpace":
        return cls(**{"block_types": LEGACY_BLOCK_TYPES, **fields_from_dict(cls, data, "space.arch")})


def pool_choices(num_stages: int) -> list[int]:
    """Divisors of the final side S = 32 / 2^(N-1): the valid pool kernels P."""
    side = final_side(num_stages)
    return [d for d in range(1, side + 1) if side % d == 0]


def sample_arch(trial: TrialLike, space: ArchSpace, budget: int | None = None, max_macs: int | None = None) -> ArchConfig:
    """Draw one architecture from `space`. Builds nothing: count it before building.
    With `budget` (and `max_macs`), an over-budget draw is narrowed to fit (see objectives/budget.py)."""
    n = trial.suggest_int("num_stages", *space.num_stages)
    stages = tuple(
        StageConfig(
            blocks=trial.suggest_int(f"stage{i}_blocks", *space.blocks),
            channels=trial.suggest_categorical(f"stage{i}_channels", space.channels),
            conv_kernel=trial.suggest_categorical(f"stage{i}_conv_kernel", space.conv_kernels),
            skip_kernel=trial.suggest_categorical(f"stage{i}_skip_kernel", space.skip_kernels),
            block=suggest_choice(trial, f"stage{i}_block_type", space.block_types),
        )
        for i in range(1, n + 1)
    )
    arch = ArchConfig(
        stages=stages,
        pool_kernel=trial.suggest_categorical(f"pool_kernel_n{n}", pool_choices(n)),
        stem_kernel=trial.suggest_categorical("stem_kernel", space.stem_kernels),
        stem_width=trial.suggest_categorical("stem_width", space.stem_widths),
        stem_se_ratio=trial.suggest_categorical("stem_se_ratio", space.stem_se_ratios),
        se_ratio=trial.suggest_categorical("se_ratio", space.se_ratios),
        activation=trial.suggest_categorical("activation", space.activations),
        block_dropout=suggest_range(trial, "block_dropout", space.block_dropout),
        head_dropout=suggest_range(trial, "head_dropout", space.head_dropout),
    )
    return arch if budget is None else fit_to_budget(arch, space.channels, budget, max_macs)


def arch_to_params(arch: ArchConfig, space: ArchSpace) -> dict[str, Any]:
    """The trial parameters under which `sample_arch` yields `arch` (for enqueueing known
    designs); ValueError naming the first value the space cannot produce."""
    def check(name: str, value: Any, allowed: Any, is_range: bool = False) -> Any:
        ok = allowed[0] <= value <= allowed[1] if is_range else value in allowed
        if not ok:
            raise ValueError(f"{name}={value!r} is outside this study's space ({list(allowed)})")
        return value

    n = arch.num_stages
    params: dict[str, Any] = {"num_stages": check("num_stages", n, space.num_stages, True)}
    for i, s in enumerate(arch.stages, start=1):
        params[f"stage{i}_blocks"] = check(f"stage{i}_blocks", s.blocks, space.blocks, True)
        params[f"stage{i}_channels"] = check(f"stage{i}_channels", s.channels, space.channels)
        params[f"stage{i}_conv_kernel"] = check(f"stage{i}_conv_kernel", s.conv_kernel, space.conv_kernels)
        params[f"stage{i}_skip_kernel"] = check(f"stage{i}_skip_kernel", s.skip_kernel, space.skip_kernels)
        check(f"stage{i}_block_type", s.block, space.block_types)
        if len(space.block_types) > 1:
            params[f"stage{i}_block_type"] = s.block
    params[f"pool_kernel_n{n}"] = arch.pool_kernel
    stem_width = None if arch.stem_width == arch.stages[0].channels and None in space.stem_widths else arch.stem_width
    params.update(
        stem_kernel=check("stem_kernel", arch.stem_kernel, space.stem_kernels),
        stem_width=check("stem_width", stem_width, space.stem_widths),
        stem_se_ratio=check("stem_se_ratio", arch.stem_se_ratio, space.stem_se_ratios),
        se_ratio=check("se_ratio", arch.se_ratio, space.se_ratios),
        activation=check("activation", arch.activation, space.activations),
    )
    for name in ("block_dropout", "head_dropout"):
        lo, hi = getattr(space, name)
        value = check(name, getattr(arch, name), (lo, hi), True)
        if lo != hi:
            params[name] = value
    return params


@dataclass(frozen=True)
class SearchSpace:
    """Everything a study searches: the architecture ranges and the recipe ranges."""
    arch: ArchSpace = dataclasses.field(default_factory=ArchSpace)
    recipe: RecipeSpace = dataclasses.field(default_factory=RecipeSpace)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        """Missing sections and fields take their defaults (a missing arch.block_types: basic
        blocks only, as in every space written before block types existed)."""
        if not isinstance(data, dict) or set(data) - {"arch", "recipe"}:
            raise ValueError("space: must be a JSON object with 'arch' and/or 'recipe' sections")
        return cls(ArchSpace.from_dict(data.get("arch", {})), RecipeSpace.from_dict(data.get("recipe", {})))

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        return cls.from_dict(parse_json("space", text))

