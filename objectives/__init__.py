"""What a trial is: the ResNet space, its exact size, the model, CIFAR-10 data."""
from .architecture import ArchConfig, StageConfig
from .counting import OverBudgetError, check_budget, count_macs, count_params
from .presets import PRESETS, get_preset

__all__ = ["ArchConfig", "StageConfig", "OverBudgetError", "check_budget", "count_macs",
           "count_params", "build", "PRESETS", "get_preset"]


def __getattr__(name: str):
    # The model builder imports torch; loading it on first use keeps the space, counting and
    # stored-architecture readers (status, the sampler, the CLI's help) free of it.
    if name == "build":
        from .model import build
        return build
    raise AttributeError(f"module 'objectives' has no attribute {name!r}")
