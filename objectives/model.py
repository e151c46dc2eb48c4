"""Build a torch ResNet from an ArchConfig.

Layer for layer this mirrors `counting.py`; a property test keeps the two in step.
Convs carry no bias (a BatchNorm follows each); SE blocks use biased 1x1 convs as
in the SE paper; the classifier is one biased Linear layer.
"""
from __future__ import annotations

import torch
from torch import nn

from .architecture import ArchConfig, se_hidden


def make_activation(name: str) -> nn.Module:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "silu": lambda: nn.SiLU(inplace=True),
        "gelu": lambda: nn.GELU(),
    }[name]()


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> 1x1 conv -> act -> 1x1 conv -> sigmoid."""

    def __init__(self, channels: int, ratio: int, activation: str):
        super().__init__()
        hidden = se_hidden(channels, ratio)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class BasicBlock(nn.Module):
    """conv-BN-act-[dropout]-conv-BN-[SE] + skip, then act."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv_kernel: int, skip_kernel: int,
                 se_ratio: int, activation: str, dropout: float):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, conv_kernel, stride)
        self.act1 = make_activation(activation)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv_bn(c_out, c_out, conv_kernel)
        self.se = SqueezeExcite(c_out, se_ratio, activation) if se_ratio else nn.Identity()
        # Projection only where shapes differ; identity keeps the residual path free.
        self.shortcut = (conv_bn(c_in, c_out, skip_kernel, stride)
                         if stride != 1 or c_in != c_out else nn.Identity())
        self.act2 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.act1(self.conv1(x)))
        out = self.se(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.arch = arch
        stem = [*conv_bn(3, arch.stem_channels, arch.stem_kernel), make_activation(arch.activation)]
        if arch.stem_se_ratio:
            stem.append(SqueezeExcite(arch.stem_channels, arch.stem_se_ratio, arch.activation))
        self.stem = nn.Sequential(*stem)
        stages, c_in = [], arch.stem_channels
        for i, s in enumerate(arch.stages):
            blocks = []
            for b in range(s.blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_in, s.channels, stride, s.conv_kernel, s.skip_kernel,
                                         arch.se_ratio, arch.activation, arch.block_dropout))
                c_in = s.channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AvgPool2d(arch.pool_kernel)
        self.head_dropout = nn.Dropout(arch.head_dropout) if arch.head_dropout > 0 else nn.Identity()
        self.fc = nn.Linear(arch.fc_in_features, arch.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each residual branch: every block starts as identity,
        # which trains deep configs stably from the first step (Goyal et al., 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.head_dropout(x))


def build(arch: ArchConfig) -> ResNet:
    """The model for `arch`, on the current default device (use torch.device('meta')
    to get shapes and sizes without allocating weights)."""
    return ResNet(arch)
