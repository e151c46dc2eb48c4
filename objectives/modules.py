"""The torch modules a plan's layers build that torch.nn does not have."""
from __future__ import annotations

import torch
from torch import nn

from .activations import make_activation


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> 1x1 conv -> act -> 1x1 conv -> sigmoid."""

    def __init__(self, channels: int, hidden: int, activation: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))
