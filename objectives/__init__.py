"""What a trial is: the ResNet space, its exact size, the model, CIFAR-10 data."""
from .architecture import ArchConfig, StageConfig
from .counting import OverBudgetError, check_budget, count_macs, count_params
from .model import build
from .presets import PRESETS, get_preset

__all__ = ["ArchConfig", "StageConfig", "OverBudgetError", "check_budget", "count_macs",
           "count_params", "build", "PRESETS", "get_preset"]
