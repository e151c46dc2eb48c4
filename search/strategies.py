"""The pruners and samplers a study may name: one registry entry each, the only place one is
declared. The study definition validates its names against the keys and builds its objects
through the factories, and `search create/run --pruner/--sampler` offer the keys as choices,
so adding one is one entry here and an unknown name is refused everywhere.

A factory takes the study definition: what it needs (epochs for rungs, the seed) is there.
Optuna is imported inside the factories, so the command line reads the keys without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .definition import StudyDefinition

Factory = Callable[["StudyDefinition"], Any]


def _hyperband(definition: StudyDefinition):
    from optuna.pruners import HyperbandPruner
    # Rungs over epochs: with 20 epochs and factor 3, trials are judged at 1, 3, 9 epochs.
    return HyperbandPruner(min_resource=1, max_resource=definition.epochs, reduction_factor=3)


def _median(definition: StudyDefinition):
    from optuna.pruners import MedianPruner
    return MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def _no_pruning(definition: StudyDefinition):
    from optuna.pruners import NopPruner
    return NopPruner()


def _tpe(definition: StudyDefinition):
    from optuna.samplers import TPESampler
    # Optuna 5's TPE default: multivariate + constant liar (parallel workers do not
    # all sample the same point), and it reads each trial's constraint (the budget).
    return TPESampler()


def _random(definition: StudyDefinition):
    from optuna.samplers import RandomSampler
    return RandomSampler()


PRUNERS: dict[str, Factory] = {"hyperband": _hyperband, "median": _median, "none": _no_pruning}
SAMPLERS: dict[str, Factory] = {"tpe": _tpe, "random": _random}
DEFAULT_PRUNER = "hyperband"
DEFAULT_SAMPLER = "tpe"


def check_name(what: str, registry: dict[str, Factory], name: str) -> str:
    if name not in registry:
        raise ValueError(f"{what}: must be one of {', '.join(registry)}, got {name!r}")
    return name
