"""The training recipe of one trial, its searchable ranges, and sampling.

Like the architecture, a `Recipe` is plain data (JSON both ways) and
`RecipeSpace` declares the ranges a study searches; `sample_recipe` draws one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .architecture import fields_from_dict
from .checks import boolean, choice, low_high, non_empty_list, number
from .clipping import GRAD_CLIPPERS
from .optimizers import OPTIMIZERS as OPTIMIZER_REGISTRY, get_optimizer
from .schedule import SCHEDULES as SCHEDULE_REGISTRY
from .trial_like import TrialLike, suggest_choice, suggest_range

OPTIMIZERS = tuple(OPTIMIZER_REGISTRY)  # names; each optimizer is declared once, in optimizers.py
SCHEDULES = tuple(SCHEDULE_REGISTRY)  # names; each schedule is declared once, in schedule.py
# What a study searches by default: multistep came later (for He et al.'s recipe), and a
# default space that grew would no longer match the studies stored with the old one.
SEARCHED_SCHEDULES = ("onecycle", "cosine", "step", "constant")
PADDING_MODES = ("reflect", "zeros")
GRAD_CLIP_MODES = tuple(GRAD_CLIPPERS)  # names; declared once, in clipping.py
USES_MOMENTUM = tuple(name for name, spec in OPTIMIZER_REGISTRY.items() if spec.uses_momentum)
MAX_LR = 100.0            # far above any optimizer's useful peak: larger is a typo
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536   # above the 45,000 training images of a split: one batch anyway
MAX_GRAD_CLIP = 1_000.0   # a clip this loose never clips; larger is a typo


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
        f = lambda name: f"recipe.{name}"  # noqa: E731
        choice(f("optimizer"), self.optimizer, OPTIMIZERS)
        choice(f("schedule"), self.schedule, SCHEDULES)
        choice(f("padding_mode"), self.padding_mode, PADDING_MODES)
        choice(f("grad_clip_mode"), self.grad_clip_mode, GRAD_CLIP_MODES)
        number(f("lr"), self.lr, 0, MAX_LR, lo_open=True)
        number(f("momentum"), self.momentum, 0, 1, hi_open=True)
        if get_optimizer(self.optimizer).needs_momentum and self.momentum <= 0:
            raise ValueError(f"recipe.momentum: must be > 0 for {self.optimizer}, got {self.momentum!r}")
        number(f("weight_decay"), self.weight_decay, 0, 1)
        boolean(f("decay_bn_and_bias"), self.decay_bn_and_bias)
        number(f("warmup_fraction"), self.warmup_fraction, 0, 1, hi_open=True)
        number(f("step_every_epochs"), self.step_every_epochs, 1, MAX_EPOCHS, integer=True)
        number(f("step_gamma"), self.step_gamma, 0, 1, lo_open=True)
        number(f("epochs"), self.epochs, 1, MAX_EPOCHS, integer=True)
        number(f("batch_size"), self.batch_size, 1, MAX_BATCH_SIZE, integer=True)
        number(f("crop_padding"), self.crop_padding, 0, 16, integer=True)  # reflect padding needs pad < 32
        boolean(f("flip"), self.flip)
        number(f("cutout"), self.cutout, 0, 32, integer=True)
        number(f("mixup_alpha"), self.mixup_alpha, 0, 100)
        number(f("rotation_degrees"), self.rotation_degrees, 0, 180)
        number(f("label_smoothing"), self.label_smoothing, 0, 1, hi_open=True)
        number(f("grad_clip_max"), self.grad_clip_max, 0, MAX_GRAD_CLIP, lo_open=True)
        number(f("ema_decay"), self.ema_decay, 0, 1, hi_open=True)
        boolean(f("tta_flip"), self.tta_flip)

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
        name: spec.lr_range for name, spec in OPTIMIZER_REGISTRY.items()})
    momentum: tuple[float, float] = (0.8, 0.95)
    weight_decay: tuple[float, float] = (1e-5, 2e-3)     # log-uniform
    decay_bn_and_bias: tuple[bool, ...] = (False, True)
    schedules: tuple[str, ...] = SEARCHED_SCHEDULES
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
        # Every value a worker could sample is checked here, through the same Recipe checks
        # the worker will run, so a bad space fails at `search create`, naming its field.
        if not isinstance(self.lr, dict) or not self.lr:
            raise ValueError(f"space.recipe.lr: must map each optimizer to [low, high], got {self.lr!r}")
        for o in self.lr:
            choice("space.recipe.lr", o, OPTIMIZERS)
        object.__setattr__(self, "lr", {o: low_high(f"space.recipe.lr.{o}", v) for o, v in self.lr.items()})
        for name, recipe_field in CHOICE_FIELDS.items():
            values = non_empty_list(f"space.recipe.{name}", getattr(self, name))
            object.__setattr__(self, name, values)
            for v in values:
                _check_as_recipe(f"space.recipe.{name}", recipe_field, v)
        for name in RANGE_FIELDS:
            lo_hi = low_high(f"space.recipe.{name}", getattr(self, name))
            object.__setattr__(self, name, lo_hi)
            for v in lo_hi:
                _check_as_recipe(f"space.recipe.{name}", name, v)
        missing = [o for o in self.optimizers if o not in self.lr]
        if missing:
            raise ValueError(f"space.recipe.lr: no range for {missing}")
        for o, (lo, hi) in self.lr.items():
            for v in (lo, hi):
                _check_as_recipe(f"space.recipe.lr.{o}", "lr", v)
        needing = [o for o in self.optimizers if get_optimizer(o).needs_momentum]
        if needing and self.momentum[0] <= 0:
            raise ValueError(f"space.recipe.momentum: must be > 0 when {needing[0]} is searched, "
                             f"got {list(self.momentum)}")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "lr"}
        out["lr"] = {k: list(v) for k, v in self.lr.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecipeSpace":
        return cls(**fields_from_dict(cls, data, "space.recipe"))


# RecipeSpace field -> the Recipe field each of its values becomes
CHOICE_FIELDS = {"optimizers": "optimizer", "decay_bn_and_bias": "decay_bn_and_bias", "schedules": "schedule",
                 "batch_sizes": "batch_size", "crop_paddings": "crop_padding", "padding_modes": "padding_mode",
                 "flips": "flip", "cutouts": "cutout", "mixup_alphas": "mixup_alpha", "rotations": "rotation_degrees",
                 "grad_clip_modes": "grad_clip_mode", "ema_decays": "ema_decay", "tta_flips": "tta_flip"}
RANGE_FIELDS = ("momentum", "weight_decay", "epochs", "label_smoothing", "grad_clip_max")


def outside_space(recipe: Recipe, space: RecipeSpace) -> list[str]:
    """Each value of `recipe` that sampling from `space` could not produce, as 'field value
    (space: ...)'; empty when the space can express the recipe. Momentum is compared only for an
    optimizer that uses it, and the clip bound only when clipping is on, as `sample_recipe` draws."""
    out = []
    for name, field in CHOICE_FIELDS.items():
        value, allowed = getattr(recipe, field), getattr(space, name)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            out.append(f"{field} {value!r} (space: {list(allowed)})")
    ranges = {name: getattr(space, name) for name in RANGE_FIELDS}
    if recipe.optimizer in space.lr:
        ranges["lr"] = space.lr[recipe.optimizer]
    if recipe.optimizer not in USES_MOMENTUM:
        del ranges["momentum"]
    if recipe.grad_clip_mode == "none":
        del ranges["grad_clip_max"]
    for field, (lo, hi) in ranges.items():
        value = getattr(recipe, field)
        if not lo <= value <= hi:
            out.append(f"{field} {value:g} (space: [{lo:g}, {hi:g}])")
    return out


def _check_as_recipe(where: str, recipe_field: str, value: Any) -> None:
    """ValueError under `where` if a Recipe could not hold `value` in `recipe_field`."""
    base = {"optimizer": "sgd"}  # plain SGD accepts momentum 0
    try:
        Recipe(**{**base, recipe_field: value})
    except ValueError as e:
        raise ValueError(str(e).replace(f"recipe.{recipe_field}", where, 1)) from None


def sample_recipe(trial: TrialLike, space: RecipeSpace) -> Recipe:
    """Draw one recipe; parameters that do not apply (momentum for Adam, ...) are not sampled."""
    optimizer = suggest_choice(trial, "optimizer", space.optimizers)
    lo, hi = space.epochs
    clip = suggest_choice(trial, "grad_clip_mode", space.grad_clip_modes)
    return Recipe(
        optimizer=optimizer,
        lr=suggest_range(trial, f"lr_{optimizer}", space.lr[optimizer], log=True),
        momentum=suggest_range(trial, "momentum", space.momentum) if optimizer in USES_MOMENTUM else 0.9,
        weight_decay=suggest_range(trial, "weight_decay", space.weight_decay, log=space.weight_decay[0] > 0),
        decay_bn_and_bias=suggest_choice(trial, "decay_bn_and_bias", space.decay_bn_and_bias),
        schedule=suggest_choice(trial, "schedule", space.schedules),
        epochs=lo if lo == hi else trial.suggest_int("epochs", lo, hi),
        batch_size=suggest_choice(trial, "batch_size", space.batch_sizes),
        crop_padding=suggest_choice(trial, "crop_padding", space.crop_paddings),
        padding_mode=suggest_choice(trial, "padding_mode", space.padding_modes),
        flip=suggest_choice(trial, "flip", space.flips),
        cutout=suggest_choice(trial, "cutout", space.cutouts),
        mixup_alpha=suggest_choice(trial, "mixup_alpha", space.mixup_alphas),
        rotation_degrees=suggest_choice(trial, "rotation_degrees", space.rotations),
        label_smoothing=suggest_range(trial, "label_smoothing", space.label_smoothing),
        grad_clip_mode=clip,
        grad_clip_max=suggest_range(trial, "grad_clip_max", space.grad_clip_max, log=True) if clip != "none" else 1.0,
        ema_decay=suggest_choice(trial, "ema_decay", space.ema_decays),
        tta_flip=suggest_choice(trial, "tta_flip", space.tta_flips),
    )
