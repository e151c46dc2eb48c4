"""The ResNet architecture of one trial, as plain data.

An `ArchConfig` describes a ResNet for 32x32 inputs completely: the stem, N
stages of residual blocks (of a type from `blocks.py` per stage), the average
pool and the classifier. It is the one description that the network plan
(`plan.py`, which parameter counting and model building walk), sampling
(`space.py`) and export all read, so it holds no behaviour beyond validating
itself, its derived shapes and converting to and from JSON.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .activations import ACTIVATIONS as ACTIVATION_REGISTRY
from .blocks import BLOCKS
from .checks import choice, parse_json

INPUT_SIDE = 32  # CIFAR-10 images are 32x32
INPUT_CHANNELS = 3
ACTIVATIONS = tuple(ACTIVATION_REGISTRY)  # names; each activation is declared once, in activations.py
BLOCK_TYPES = tuple(BLOCKS)               # names; each block type is declared once, in blocks.py
MAX_STAGES = 5  # 32 / 2^4 = 2: a sixth stage would leave a 1x1 map before pooling
MAX_BLOCKS = 256  # per stage (ResNet-1202 has 200): more only makes counting and building hang
MAX_CHANNELS = 4_096  # a width (or SE ratio): ResNet-50's widest stage is 2,048; wider is a typo
MAX_KERNEL = 31       # a conv kernel no wider than the 32x32 image it slides over


def stage_stride(i: int) -> int:
    """Stride of stage i's first block (0-based): every stage after the first halves the side."""
    return 1 if i == 0 else 2


def final_side(num_stages: int) -> int:
    """S: side of the last stage's feature map."""
    side = INPUT_SIDE
    for i in range(num_stages):
        side //= stage_stride(i)
    return side


@dataclass(frozen=True)
class StageConfig:
    """One stage: `blocks` residual blocks of type `block`, each `channels` wide at its output.

    conv_kernel (F_i): kernel of the 3x3-style convs in each block ('same' padding).
    skip_kernel (K_i): kernel of the projection on the skip path, used wherever a
    block's input and output shapes differ (stride or channels).
    block: a name in blocks.BLOCKS; "basic" is every config written before block types existed.
    """
    blocks: int
    channels: int
    conv_kernel: int = 3
    skip_kernel: int = 1
    block: str = "basic"


@dataclass(frozen=True)
class ArchConfig:
    """A whole network. Stage i > 1 halves the side at its first block."""
    stages: tuple[StageConfig, ...]
    pool_kernel: int                 # P: AvgPool2d kernel (and stride) on the final map
    stem_kernel: int = 3
    stem_width: int | None = None    # None: the first stage's width (C_1)
    stem_se_ratio: int = 0           # >0: one SE block right after the stem
    se_ratio: int = 0                # >0: an SE block in every residual block
    activation: str = "relu"
    block_dropout: float = 0.0       # dropout between the two convs of every block
    head_dropout: float = 0.0        # dropout before the classifier
    num_classes: int = 10

    def __post_init__(self) -> None:
        # Accept lists (from JSON or users) but store tuples so configs stay hashable.
        stages = tuple(s if isinstance(s, StageConfig) else StageConfig(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        validate(self)

    # Derived shapes, used by the builder and both counters.
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def stem_channels(self) -> int:
        return self.stem_width if self.stem_width is not None else self.stages[0].channels

    @property
    def final_side(self) -> int:
        """S: side of the last stage's feature map."""
        return final_side(self.num_stages)

    @property
    def pooled_side(self) -> int:
        return self.final_side // self.pool_kernel

    @property
    def fc_in_features(self) -> int:
        return self.stages[-1].channels * self.pooled_side ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchConfig":
        fields_from_dict(cls, data, "architecture")
        if "stages" not in data or "pool_kernel" not in data:
            raise ValueError("architecture: 'stages' and 'pool_kernel' are required")
        stages = data["stages"]
        if not isinstance(stages, (list, tuple)):
            raise ValueError("stages: must be a list of stage objects")
        stage_fields = {f.name for f in dataclasses.fields(StageConfig)}
        parsed = []
        for i, s in enumerate(stages, start=1):
            if isinstance(s, StageConfig):
                parsed.append(s)
                continue
            if not isinstance(s, dict) or not set(s) <= stage_fields or not {"blocks", "channels"} <= set(s):
                raise ValueError(f"stages[{i}]: needs 'blocks' and 'channels', may have "
                                 f"'conv_kernel', 'skip_kernel' and 'block'")
            parsed.append(StageConfig(**s))
        return cls(**{**data, "stages": tuple(parsed)})

    @classmethod
    def from_json(cls, text: str, unwrap: bool = False) -> "ArchConfig":
        """With `unwrap`, also the object `search arch` prints ({"architecture": {...}, "params": ...})."""
        data = parse_json("architecture", text)
        if unwrap and isinstance(data, dict) and isinstance(data.get("architecture"), dict):
            data = data["architecture"]
        return cls.from_dict(data)


def fields_from_dict(cls: type, data: Any, where: str) -> dict[str, Any]:
    """`data` checked to be a JSON object holding only `cls`'s dataclass fields."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return data


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_kernel(name: str, k: Any) -> None:
    if not _is_int(k) or not 1 <= k <= MAX_KERNEL or k % 2 == 0:
        raise ValueError(f"{name}: must be an odd kernel size in [1, {MAX_KERNEL}] (1, 3, 5, 7, ...), got {k!r}")


def validate(arch: ArchConfig) -> None:
    """Raise ValueError naming the first field that makes `arch` unbuildable."""
    n = len(arch.stages)
    if not 1 <= n <= MAX_STAGES:
        raise ValueError(f"stages: need 1 to {MAX_STAGES} stages, got {n}")
    for i, s in enumerate(arch.stages, start=1):
        if not _is_int(s.blocks) or not 1 <= s.blocks <= MAX_BLOCKS:
            raise ValueError(f"stages[{i}].blocks: must be an integer in [1, {MAX_BLOCKS}], got {s.blocks!r}")
        if not _is_int(s.channels) or not 1 <= s.channels <= MAX_CHANNELS:
            raise ValueError(f"stages[{i}].channels: must be an integer in [1, {MAX_CHANNELS:,}], got {s.channels!r}")
        _check_kernel(f"stages[{i}].conv_kernel", s.conv_kernel)
        _check_kernel(f"stages[{i}].skip_kernel", s.skip_kernel)
        choice(f"stages[{i}].block", s.block, BLOCK_TYPES)
    _check_kernel("stem_kernel", arch.stem_kernel)
    if arch.stem_width is not None and (not _is_int(arch.stem_width) or not 1 <= arch.stem_width <= MAX_CHANNELS):
        raise ValueError(f"stem_width: must be an integer in [1, {MAX_CHANNELS:,}] or null, got {arch.stem_width!r}")
    for name in ("stem_se_ratio", "se_ratio"):
        r = getattr(arch, name)
        if not _is_int(r) or not 0 <= r <= MAX_CHANNELS:
            raise ValueError(f"{name}: must be 0 (no SE) or an integer up to {MAX_CHANNELS:,}, got {r!r}")
    choice("activation", arch.activation, ACTIVATIONS)
    for name in ("block_dropout", "head_dropout"):
        p = getattr(arch, name)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"{name}: must be a probability in [0, 1), got {p!r}")
    if not _is_int(arch.num_classes) or arch.num_classes < 2:
        raise ValueError(f"num_classes: must be an integer >= 2, got {arch.num_classes!r}")
    side = final_side(n)
    if not _is_int(arch.pool_kernel) or arch.pool_kernel < 1 or side % arch.pool_kernel:
        divisors = [d for d in range(1, side + 1) if side % d == 0]
        raise ValueError(f"pool_kernel: must divide the final {side}x{side} map "
                         f"(one of {divisors}), got {arch.pool_kernel!r}")

