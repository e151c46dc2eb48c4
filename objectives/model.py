"""Build a torch ResNet from an ArchConfig by walking its network plan (`plan.py`), the
same plan `counting.py` counts; a property test checks the two agree on random configs of
every block type. Module names follow the plan's names, which for basic blocks are the
state-dict names of model files written before block types existed.
"""
from __future__ import annotations

import torch
from torch import nn

from .architecture import ArchConfig
from .blocks import BlockPlan, Layers
from .modules import SqueezeExcite
from .plan import network_plan


def _add(module: nn.Module, layers: Layers) -> list[str]:
    for name, layer in layers.items():
        module.add_module(name, layer.build())
    return list(layers)


def _run(module: nn.Module, names: list[str], x: torch.Tensor) -> torch.Tensor:
    for name in names:
        x = getattr(module, name)(x)
    return x


class ResidualBlock(nn.Module):
    """One residual block of any type: see blocks.py for what pre, residual, shortcut and post are."""

    def __init__(self, plan: BlockPlan):
        super().__init__()
        self.pre = _add(self, plan.pre)
        self.residual = _add(self, plan.residual)
        self.shortcut_path = _add(self, plan.shortcut)
        self.post = _add(self, plan.post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _run(self, self.pre, x)
        skip = _run(self, self.shortcut_path, h) if self.shortcut_path else x
        return _run(self, self.post, _run(self, self.residual, h) + skip)

    def zero_init_last(self) -> None:
        """Make the residual branch start at zero, so the block starts as the identity (Goyal et
        al., 2017): zero the branch's last scale, the BN after its last conv where there is one
        (basic, bottleneck), else that conv's weight (pre-activation, whose last conv follows
        BN-act: zeroing that BN would put every activation at 0, where ReLU passes no gradient,
        and the branch would never train; timm zeroes the conv there too)."""
        for name in reversed(self.residual):
            module = getattr(self, name)
            if isinstance(module, SqueezeExcite) or not any(True for _ in module.parameters()):
                continue  # SE gates the branch's output, activations and dropout hold nothing to zero
            bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
            nn.init.zeros_(bns[-1].weight if bns else module.weight)
            return


class ResNet(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.arch = arch
        plan = network_plan(arch)
        self.stem = nn.Sequential(*(layer.build() for layer in plan.stem.values()))
        self.stages = nn.Sequential(*(nn.Sequential(*(ResidualBlock(b) for b in stage)) for stage in plan.stages))
        self.final = nn.Sequential(*(layer.build() for layer in plan.final.values()))
        self.head = _add(self, plan.head)  # pool, flatten, [head_dropout], fc
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, ResidualBlock):
                m.zero_init_last()  # every block starts as the identity: deep configs train stably

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self, self.head, self.final(self.stages(self.stem(x))))


def build(arch: ArchConfig) -> ResNet:
    """The model for `arch`, on the current default device (use torch.device('meta')
    to get shapes and sizes without allocating weights)."""
    return ResNet(arch)
