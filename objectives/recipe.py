"""The training recipe of one trial, its searchable ranges, and sampling.

Like the architecture, a `Recipe` is plain data (JSON both ways) and
`RecipeSpace` declares the ranges a study searches; `sample_recipe` draws one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .architecture import fields_from_dict
from .space import TrialLike

OPTIMIZERS = ("sgd", "sgd_nesterov", "adam", "adamw", "adadelta", "adagrad", "rmsprop")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
PADDING_MODES = ("reflect", "zeros")
GRAD_CLIP_MODES = ("none", "norm", "value")
USES_MOMENTUM = ("sgd", "sgd_nesterov", "rmsprop")


@dataclass(frozen=True)
class Recipe:
    # Optimisation
    optimizer: str = "sgd_nesterov"
    lr: float = 0.2                  # peak learning rate at this batch size
    momentum: float = 0.9            # sgd, sgd_nesterov, rmsprop only
    weight_decay: float = 5e-4       # L2 (decoupled for adamw)
    decay_bn_and_bias: bool = False  # False: BN and bias parameters get no weight decay
    # Schedule (stepped every batch)
    schedule: str = "onecycle"
    warmup_fraction: float = 0.2     # onecycle / cosine: share of all steps spent warming up
    step_every_epochs: int = 10      # step: multiply by step_gamma every this many epochs
    step_gamma: float = 0.2
    epochs: int = 20
    batch_size: int = 512
    # Augmentation (on the training device, per sample)
    crop_padding: int = 4            # random 32x32 crop of the image padded by this many pixels; 0: off
    padding_mode: str = "reflect"
    flip: bool = True                # random horizontal flip
    cutout: int = 0                  # side of a square zeroed at a random centre; 0: off
    mixup_alpha: float = 0.0         # Beta(alpha, alpha) mixing weight per batch; 0: off
    rotation_degrees: float = 0.0    # uniform in +-this; 0: off
    # Loss and regularisation
    label_smoothing: float = 0.1
    grad_clip_mode: str = "none"
    grad_clip_max: float = 1.0       # max norm, or max absolute value
    ema_decay: float = 0.0           # per-step EMA of weights (and BN buffers) used for evaluation; 0: off
    tta_flip: bool = True            # evaluate on the image and its mirror, averaging logits

    def __post_init__(self) -> None:
        def need(cond: bool, field: str, what: str) -> None:
            if not cond:
                raise ValueError(f"recipe.{field}: {what}, got {getattr(self, field)!r}")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}")
        need(self.padding_mode in PADDING_MODES, "padding_mode", f"must be one of {', '.join(PADDING_MODES)}")
        need(self.grad_clip_mode in GRAD_CLIP_MODES, "grad_clip_mode", f"must be one of {', '.join(GRAD_CLIP_MODES)}")
        need(self.lr > 0, "lr", "must be > 0")
        need(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        need(self.optimizer != "sgd_nesterov" or self.momentum > 0, "momentum", "must be > 0 for Nesterov")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.warmup_fraction < 1, "warmup_fraction", "must be in [0, 1)")
        need(self.step_every_epochs >= 1, "step_every_epochs", "must be >= 1")
        need(0 < self.step_gamma <= 1, "step_gamma", "must be in (0, 1]")
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "must be an integer >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "must be an integer >= 1")
        need(isinstance(self.crop_padding, int) and 0 <= self.crop_padding <= 16, "crop_padding", "must be 0..16")
        need(isinstance(self.cutout, int) and 0 <= self.cutout <= 32, "cutout", "must be 0..32")
        need(self.mixup_alpha >= 0, "mixup_alpha", "must be >= 0")
        need(0 <= self.rotation_degrees <= 180, "rotation_degrees", "must be in [0, 180]")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        need(self.grad_clip_max > 0, "grad_clip_max", "must be > 0")
        need(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        return cls(**fields_from_dict(cls, data, "recipe"))


@dataclass(frozen=True)
class RecipeSpace:
    """Ranges: `[low, high]` (a range with low == high is fixed, not searched); lists are choices."""
    optimizers: tuple[str, ...] = OPTIMIZERS
    # Peak learning rate per optimizer (log-uniform): each family lives at its own scale.
    lr: dict = dataclasses.field(default_factory=lambda: {
        "sgd": (0.02, 0.8), "sgd_nesterov": (0.02, 0.8), "rmsprop": (1e-4, 3e-3),
        "adam": (2e-4, 5e-3), "adamw": (2e-4, 5e-3), "adagrad": (5e-3, 0.2), "adadelta": (0.1, 3.0)})
    momentum: tuple[float, float] = (0.8, 0.95)
    weight_decay: tuple[float, float] = (1e-5, 2e-3)     # log-uniform
    decay_bn_and_bias: tuple[bool, ...] = (False, True)
    schedules: tuple[str, ...] = SCHEDULES
    epochs: tuple[int, int] = (20, 20)                   # fixed per study by default
    batch_sizes: tuple[int, ...] = (256, 512, 1024)
    crop_paddings: tuple[int, ...] = (0, 2, 4)
    padding_modes: tuple[str, ...] = PADDING_MODES
    flips: tuple[bool, ...] = (True,)
    cutouts: tuple[int, ...] = (0, 8, 12, 16)
    mixup_alphas: tuple[float, ...] = (0.0, 0.2, 0.4)
    rotations: tuple[float, ...] = (0.0, 5.0)
    label_smoothing: tuple[float, float] = (0.0, 0.2)
    grad_clip_modes: tuple[str, ...] = ("none", "norm")
    grad_clip_max: tuple[float, float] = (0.5, 5.0)     # log-uniform
    ema_decays: tuple[float, ...] = (0.0, 0.99, 0.999)
    tta_flips: tuple[bool, ...] = (True,)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "lr":
                if not isinstance(value, dict):
                    raise ValueError("space.recipe.lr: must map each optimizer to [low, high]")
                object.__setattr__(self, "lr", {k: tuple(v) for k, v in value.items()})
                continue
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"space.recipe.{f.name}: must be a non-empty list")
            object.__setattr__(self, f.name, tuple(value))
        bad = [o for o in self.optimizers if o not in OPTIMIZERS]
        if bad:
            raise ValueError(f"space.recipe.optimizers: unknown {bad}; known: {', '.join(OPTIMIZERS)}")
        missing = [o for o in self.optimizers if o not in self.lr]
        if missing:
            raise ValueError(f"space.recipe.lr: no range for {missing}")
        for name, (lo, hi) in [*(("lr." + k, v) for k, v in self.lr.items()),
                               ("momentum", self.momentum), ("weight_decay", self.weight_decay),
                               ("epochs", self.epochs), ("label_smoothing", self.label_smoothing),
                               ("grad_clip_max", self.grad_clip_max)]:
            if lo > hi:
                raise ValueError(f"space.recipe.{name}: low {lo} > high {hi}")
        bad = [s for s in self.schedules if s not in SCHEDULES]
        if bad:
            raise ValueError(f"space.recipe.schedules: unknown {bad}; known: {', '.join(SCHEDULES)}")
        if any(lo <= 0 for lo, _ in self.lr.values()) or self.weight_decay[0] < 0:
            raise ValueError("space.recipe: lr ranges must be > 0 and weight_decay >= 0")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "lr"}
        out["lr"] = {k: list(v) for k, v in self.lr.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecipeSpace":
        return cls(**fields_from_dict(cls, data, "space.recipe"))


def _range(trial: TrialLike, name: str, lo_hi: tuple, log: bool = False) -> float:
    lo, hi = lo_hi
    return float(lo) if lo == hi else trial.suggest_float(name, lo, hi, log=log)


def _choice(trial: TrialLike, name: str, choices: tuple) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


def sample_recipe(trial: TrialLike, space: RecipeSpace) -> Recipe:
    """Draw one recipe; parameters that do not apply (momentum for Adam, ...) are not sampled."""
    optimizer = _choice(trial, "optimizer", space.optimizers)
    lo, hi = space.epochs
    clip = _choice(trial, "grad_clip_mode", space.grad_clip_modes)
    return Recipe(
        optimizer=optimizer,
        lr=_range(trial, f"lr_{optimizer}", space.lr[optimizer], log=True),
        momentum=_range(trial, "momentum", space.momentum) if optimizer in USES_MOMENTUM else 0.9,
        weight_decay=_range(trial, "weight_decay", space.weight_decay, log=space.weight_decay[0] > 0),
        decay_bn_and_bias=_choice(trial, "decay_bn_and_bias", space.decay_bn_and_bias),
        schedule=_choice(trial, "schedule", space.schedules),
        epochs=lo if lo == hi else trial.suggest_int("epochs", lo, hi),
        batch_size=_choice(trial, "batch_size", space.batch_sizes),
        crop_padding=_choice(trial, "crop_padding", space.crop_paddings),
        padding_mode=_choice(trial, "padding_mode", space.padding_modes),
        flip=_choice(trial, "flip", space.flips),
        cutout=_choice(trial, "cutout", space.cutouts),
        mixup_alpha=_choice(trial, "mixup_alpha", space.mixup_alphas),
        rotation_degrees=_choice(trial, "rotation_degrees", space.rotations),
        label_smoothing=_range(trial, "label_smoothing", space.label_smoothing),
        grad_clip_mode=clip,
        grad_clip_max=_range(trial, "grad_clip_max", space.grad_clip_max, log=True) if clip != "none" else 1.0,
        ema_decay=_choice(trial, "ema_decay", space.ema_decays),
        tta_flip=_choice(trial, "tta_flip", space.tta_flips),
    )
