"""The layers a network plan is made of, as data: each knows the module it builds and its
exact trainable parameters and multiply-accumulates, so the model builder (`model.py`) and
the counters (`counting.py`) read the same declaration and cannot drift apart.

What counts (as `torch.utils.flop_counter.FlopCounterMode` does, at 2 FLOPs per MAC): the
multiply-accumulates of convs (SE's included) and of the classifier; BatchNorm,
activations, pooling, dropout and additions count no MACs. Parameters: conv weights (convs
carry no bias: a BatchNorm follows each, except SE's biased 1x1 convs as in the SE paper),
both BatchNorm affine vectors (running statistics are buffers), the classifier's weight and
bias.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .activations import make_activation

if TYPE_CHECKING:  # torch is imported by `build` only: plans are counted without it
    from torch import nn


def se_hidden(channels: int, ratio: int) -> int:
    """Width of an SE block's bottleneck: channels // ratio, at least 1."""
    return max(1, channels // ratio)


class Layer:
    """A layer of the plan. `side` is the side of the square feature map it reads."""
    params = 0

    def macs(self, side: int) -> int:
        return 0

    def out_side(self, side: int) -> int:
        return side

    def build(self) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class Conv(Layer):
    """A bias-free conv with 'same' padding (odd kernels), so the side shrinks only by `stride`."""
    c_in: int
    c_out: int
    kernel: int
    stride: int = 1

    @property
    def weights(self) -> int:
        return self.kernel * self.kernel * self.c_in * self.c_out

    @property
    def params(self) -> int:
        return self.weights

    def macs(self, side: int) -> int:
        return self.weights * self.out_side(side) ** 2  # one multiply-accumulate per weight per output position

    def out_side(self, side: int) -> int:
        return (side - 1) // self.stride + 1

    def build(self) -> nn.Module:
        from torch import nn
        return nn.Conv2d(self.c_in, self.c_out, self.kernel, stride=self.stride, padding=self.kernel // 2, bias=False)


@dataclass(frozen=True)
class BN(Layer):
    channels: int

    @property
    def params(self) -> int:
        return 2 * self.channels  # weight and bias

    def build(self) -> nn.Module:
        from torch import nn
        return nn.BatchNorm2d(self.channels)


@dataclass(frozen=True)
class ConvBN(Conv):
    """A conv then a BatchNorm as one module (state-dict names: NAME.0 the conv, NAME.1 the BN)."""

    @property
    def params(self) -> int:
        return super().params + BN(self.c_out).params

    def build(self) -> nn.Module:
        from torch import nn
        return nn.Sequential(super().build(), BN(self.c_out).build())


@dataclass(frozen=True)
class Act(Layer):
    name: str

    def build(self) -> nn.Module:
        return make_activation(self.name)


@dataclass(frozen=True)
class Dropout(Layer):
    p: float
    channelwise: bool = True  # whole feature maps (Dropout2d) inside blocks; single features before the classifier

    def build(self) -> nn.Module:
        from torch import nn
        return nn.Dropout2d(self.p) if self.channelwise else nn.Dropout(self.p)


@dataclass(frozen=True)
class SE(Layer):
    channels: int
    ratio: int
    activation: str

    @property
    def hidden(self) -> int:
        return se_hidden(self.channels, self.ratio)

    @property
    def params(self) -> int:
        return 2 * self.channels * self.hidden + self.hidden + self.channels  # two biased 1x1 convs

    def macs(self, side: int) -> int:
        return 2 * self.channels * self.hidden  # both 1x1 convs run on the 1x1 average

    def build(self) -> nn.Module:
        from .modules import SqueezeExcite
        return SqueezeExcite(self.channels, self.hidden, self.activation)


@dataclass(frozen=True)
class AvgPool(Layer):
    kernel: int

    def out_side(self, side: int) -> int:
        return side // self.kernel

    def build(self) -> nn.Module:
        from torch import nn
        return nn.AvgPool2d(self.kernel)


class Flatten(Layer):
    def out_side(self, side: int) -> int:
        return 1

    def build(self) -> nn.Module:
        from torch import nn
        return nn.Flatten(1)


@dataclass(frozen=True)
class Linear(Layer):
    in_features: int
    out_features: int

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + self.out_features  # weight and bias

    def macs(self, side: int) -> int:
        return self.in_features * self.out_features

    def build(self) -> nn.Module:
        from torch import nn
        return nn.Linear(self.in_features, self.out_features)
