"""Residual block types as data (timm-style): each declares its layers once, as a plan of
named layers (`layers.py`), and both the model builder and the exact counters walk that plan.
Adding a block type is one class here and one entry in BLOCKS.

A block reads x and computes, for every type:

    h = pre(x)                                   # pre-activation blocks only; else h = x
    out = post(residual(h) + shortcut(h))        # shortcut: identity (x) when it is empty

The rules every type shares are written once, in `Block`: the stride sits where the block
type puts it (the network gives stride 2 to the first block of stages 2..N); a projection
shortcut (kernel K_i) exists exactly where the block changes the side or the width; SE (when
the architecture has it) gates the residual branch's output; dropout sits before the last
conv of the branch. The layer names are state-dict names: the basic block's are those of
every model file written before block types existed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .layers import BN, SE, Act, Conv, ConvBN, Dropout, Layer

if TYPE_CHECKING:
    from .architecture import ArchConfig, StageConfig

Layers = dict[str, Layer]  # name -> layer, in build (and forward) order


@dataclass(frozen=True)
class BlockPlan:
    residual: Layers
    shortcut: Layers            # empty: the identity
    pre: Layers = field(default_factory=dict)
    post: Layers = field(default_factory=dict)


class Block:
    """A block type. C_i (the stage's `channels`) is always the block's output width."""

    def plan(self, c_in: int, stride: int, stage: "StageConfig", arch: "ArchConfig") -> BlockPlan:
        raise NotImplementedError

    def after_last_stage(self, channels: int, activation: str) -> Layers:
        """Layers between the last stage (of this type) and the pool."""
        return {}

    # Shared by every type.
    @staticmethod
    def projects(c_in: int, c_out: int, stride: int) -> bool:
        return stride != 1 or c_in != c_out

    def projection(self, c_in: int, c_out: int, kernel: int, stride: int) -> Layer:
        return ConvBN(c_in, c_out, kernel, stride)

    def shortcut(self, c_in: int, stride: int, stage: "StageConfig") -> Layers:
        if not self.projects(c_in, stage.channels, stride):
            return {}
        return {"shortcut": self.projection(c_in, stage.channels, stage.skip_kernel, stride)}

    @staticmethod
    def dropout(arch: "ArchConfig") -> Layers:
        return {"dropout": Dropout(arch.block_dropout)} if arch.block_dropout > 0 else {}

    @staticmethod
    def se(channels: int, arch: "ArchConfig") -> Layers:
        return {"se": SE(channels, arch.se_ratio, arch.activation)} if arch.se_ratio else {}


class Basic(Block):
    """He et al. (2015): conv-BN-act-[dropout]-conv-BN-[SE] + shortcut, then act. Both convs F_i x F_i."""

    def plan(self, c_in, stride, stage, arch):
        c, f, a = stage.channels, stage.conv_kernel, arch.activation
        residual = {"conv1": ConvBN(c_in, c, f, stride), "act1": Act(a), **self.dropout(arch),
                    "conv2": ConvBN(c, c, f), **self.se(c, arch)}
        return BlockPlan(residual, self.shortcut(c_in, stride, stage), post={"act2": Act(a)})


class Bottleneck(Block):
    """He et al. (2015), as torchvision's (stride on the middle conv): 1x1 reduce, F_i x F_i,
    1x1 expand, each with BN, act between, [SE], + shortcut, then act. C_i is the block's
    output width; the inner width is C_i / 4 rounded up (torchvision's expansion = 4), so a
    bottleneck stage of width 4w costs about what a basic stage of width w does."""
    expansion = 4

    def plan(self, c_in, stride, stage, arch):
        c, f, a = stage.channels, stage.conv_kernel, arch.activation
        inner = -(-c // self.expansion)
        residual = {"conv1": ConvBN(c_in, inner, 1), "act1": Act(a), "conv2": ConvBN(inner, inner, f, stride),
                    "act2": Act(a), **self.dropout(arch), "conv3": ConvBN(inner, c, 1), **self.se(c, arch)}
        return BlockPlan(residual, self.shortcut(c_in, stride, stage), post={"act3": Act(a)})


class PreAct(Block):
    """He et al. (2016), identity mappings: BN-act, then conv-BN-act-[dropout]-conv-[SE] + shortcut,
    with nothing after the addition. A projection shortcut reads the pre-activated input and is a
    bare conv (its input is already normalised), as in the paper and kuangliu's PreActBlock.
    Since no block ends in an activation, a network whose last stage is pre-activation gets
    one BN + act before the pool (the paper's final BN-ReLU)."""

    def plan(self, c_in, stride, stage, arch):
        c, f, a = stage.channels, stage.conv_kernel, arch.activation
        residual = {"conv1": Conv(c_in, c, f, stride), "bn2": BN(c), "act2": Act(a), **self.dropout(arch),
                    "conv2": Conv(c, c, f), **self.se(c, arch)}
        return BlockPlan(residual, self.shortcut(c_in, stride, stage), pre={"bn1": BN(c_in), "act1": Act(a)})

    def projection(self, c_in, c_out, kernel, stride):
        return Conv(c_in, c_out, kernel, stride)

    def after_last_stage(self, channels, activation):
        return {"bn": BN(channels), "act": Act(activation)}


BLOCKS: dict[str, Block] = {
    "basic": Basic(),
    "bottleneck": Bottleneck(),
    "preact": PreAct(),
}


def get_block(name: str) -> Block:
    try:
        return BLOCKS[name]
    except KeyError:
        raise ValueError(f"block: must be one of {', '.join(BLOCKS)}, got {name!r}") from None
