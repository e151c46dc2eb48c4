"""Gradient clipping a recipe may name: one registry entry each, like the optimizers and
schedules. Recipe validation reads the names; the trainer calls the entry after backward."""
from __future__ import annotations

from typing import Callable, Iterable


def _clip(name: str) -> Callable[[Iterable, float], object]:
    # torch is imported on first use, as in optimizers.py: validating a recipe stays light.
    def clip(parameters: Iterable, max_value: float) -> object:
        import torch.nn.utils
        return getattr(torch.nn.utils, name)(parameters, max_value)
    return clip


GRAD_CLIPPERS: dict[str, Callable[[Iterable, float], object] | None] = {
    "none": None,
    "norm": _clip("clip_grad_norm_"),    # rescale so the global L2 norm is at most max
    "value": _clip("clip_grad_value_"),  # clamp every gradient element to [-max, max]
}
