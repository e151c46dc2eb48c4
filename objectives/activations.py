"""The activations an architecture may name: one registry entry each (timm-style), the only
place an activation is declared. Validation of configs and spaces, the space's default
choices and the model builder all read this dict, so adding an activation is one entry here
and an unknown name is an error everywhere (never a silent fallback to another one).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

# name -> (torch.nn class, its arguments): in place where PyTorch offers it (saves one
# activation-sized buffer). Data, not factories, so that validating and counting architectures
# never imports torch. Each must map 0 to 0 (a test checks every entry).
ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "relu": ("ReLU", {"inplace": True}),
    "leaky_relu": ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    "elu": ("ELU", {"inplace": True}),
    "silu": ("SiLU", {"inplace": True}),
    "gelu": ("GELU", {}),
}


def make_activation(name: str) -> "nn.Module":
    try:
        cls, kwargs = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation: must be one of {', '.join(ACTIVATIONS)}, got {name!r}") from None
    from torch import nn
    return getattr(nn, cls)(**kwargs)
