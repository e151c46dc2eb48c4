"""The whole network of an ArchConfig as a plan of named layers, in build order: the stem,
each block's plan (with its stride and input width), what the last block type puts before
the pool, and the head. `model.py` builds modules from it and `counting.py` counts it;
neither repeats a structural rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from .architecture import INPUT_CHANNELS, INPUT_SIDE, ArchConfig, stage_stride
from .blocks import BlockPlan, Layers, get_block
from .layers import BN, SE, Act, AvgPool, Conv, Dropout, Flatten, Layer, Linear


@dataclass(frozen=True)
class NetworkPlan:
    stem: Layers
    stages: tuple[tuple[BlockPlan, ...], ...]
    final: Layers       # between the last stage and the pool (empty unless its block type needs it)
    head: Layers        # pool, flatten, dropout, classifier


def network_plan(arch: ArchConfig) -> NetworkPlan:
    c = arch.stem_channels
    # Flat names 0, 1, ...: the stem's state-dict names since before plans existed.
    stem = [Conv(INPUT_CHANNELS, c, arch.stem_kernel), BN(c), Act(arch.activation)]
    if arch.stem_se_ratio:
        stem.append(SE(c, arch.stem_se_ratio, arch.activation))
    stages = []
    for i, s in enumerate(arch.stages):
        block = get_block(s.block)
        stages.append(tuple(block.plan(c if b == 0 else s.channels, stage_stride(i) if b == 0 else 1, s, arch)
                            for b in range(s.blocks)))
        c = s.channels
    head: Layers = {"pool": AvgPool(arch.pool_kernel), "flatten": Flatten()}
    if arch.head_dropout > 0:
        head["head_dropout"] = Dropout(arch.head_dropout, channelwise=False)
    head["fc"] = Linear(arch.fc_in_features, arch.num_classes)
    return NetworkPlan(stem={str(i): layer for i, layer in enumerate(stem)}, stages=tuple(stages),
                       final=get_block(arch.stages[-1].block).after_last_stage(c, arch.activation), head=head)


def layers_with_sides(arch: ArchConfig) -> list[tuple[Layer, int]]:
    """Every layer of the network with the side of the feature map it reads, in build order."""
    plan, out = network_plan(arch), []

    def walk(layers: Layers, side: int) -> int:  # the side after `layers`
        for layer in layers.values():
            out.append((layer, side))
            side = layer.out_side(side)
        return side

    side = walk(plan.stem, INPUT_SIDE)
    for block in (b for stage in plan.stages for b in stage):
        side = walk(block.pre, side)
        after = walk(block.residual, side)
        assert walk(block.shortcut, side) == after  # the two paths meet at one side (identity: unchanged)
        side = walk(block.post, after)
    side = walk(plan.final, side)
    assert side == arch.final_side, (side, arch.final_side)  # the plan's strides agree with the config's
    walk(plan.head, side)
    return out
