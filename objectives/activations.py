"""The activations an architecture may name: one registry entry each (timm-style), the only
place an activation is declared. Validation of configs and spaces, the space's default
choices and the model builder all read this dict, so adding an activation is one entry here
and an unknown name is an error everywhere (never a silent fallback to another one).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

# name -> a fresh module (in place where PyTorch offers it: saves one activation-sized buffer).
# Each must map 0 to 0: a pre-activation block then starts as the identity, as the others do
# (model.py zero-initialises the last BN of every residual branch; a test checks every entry).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": lambda: nn.GELU(),
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation: must be one of {', '.join(ACTIVATIONS)}, got {name!r}") from None
