"""The optimizers a recipe may name: one registry entry each (timm-style), the only place an
optimizer is declared. Recipe validation, the space's choices and default learning-rate
ranges, which optimizers sample a momentum, and the trainer's factory all read it, so adding
an optimizer is one entry here and an unknown name is an error everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

Groups = list[dict[str, Any]]


def _optim(name: str) -> Callable[..., "torch.optim.Optimizer"]:
    # torch is imported on first use: sampling and validating recipes (which read this
    # registry) stay light enough for processes that never train (benchmarks/storage_load.py).
    import torch.optim
    return getattr(torch.optim, name)


@dataclass(frozen=True)
class OptimizerSpec:
    # (parameter groups, peak lr, momentum, fused) -> optimizer; fused: one CUDA kernel for the
    # whole update instead of one per tensor, where PyTorch has one for this optimizer
    make: Callable[[Groups, float, float, bool], torch.optim.Optimizer]
    uses_momentum: bool               # the recipe's momentum applies (and is sampled)
    lr_range: tuple[float, float]     # default search range of the peak lr (log-uniform): each family its scale
    # Peak lr against batch size in a short run (objectives/budget.py): linear for SGD (Goyal et
    # al., 2017), by the square root for adaptive optimizers.
    linear_lr_scaling: bool = False
    needs_momentum: bool = False      # momentum 0 is an error (Nesterov is undefined without it)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(lambda g, lr, m, fused: _optim("SGD")(g, lr=lr, momentum=m, fused=fused),
                         True, (0.02, 0.8), linear_lr_scaling=True),
    "sgd_nesterov": OptimizerSpec(lambda g, lr, m, fused: _optim("SGD")(g, lr=lr, momentum=m, nesterov=True,
                                                                          fused=fused), True, (0.02, 0.8),
                                 linear_lr_scaling=True, needs_momentum=True),
    "adam": OptimizerSpec(lambda g, lr, m, fused: _optim("Adam")(g, lr=lr, fused=fused), False, (2e-4, 5e-3)),
    "adamw": OptimizerSpec(lambda g, lr, m, fused: _optim("AdamW")(g, lr=lr, fused=fused), False, (2e-4, 5e-3)),
    "adadelta": OptimizerSpec(lambda g, lr, m, fused: _optim("Adadelta")(g, lr=lr), False, (0.1, 3.0)),
    "adagrad": OptimizerSpec(lambda g, lr, m, fused: _optim("Adagrad")(g, lr=lr), False, (5e-3, 0.2)),
    "rmsprop": OptimizerSpec(lambda g, lr, m, fused: _optim("RMSprop")(g, lr=lr, momentum=m), True, (1e-4, 3e-3)),
}


def get_optimizer(name: str) -> OptimizerSpec:
    try:
        return OPTIMIZERS[name]
    except KeyError:  # never train silently with another optimizer
        raise ValueError(f"recipe.optimizer: unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}") from None
