"""The pruners and samplers a study may name: one registry entry each, the only place one is
declared. The study definition validates its names against the keys and builds its objects
through the factories, and `search create/run --pruner/--sampler` offer the keys as choices,
so adding one is one entry here and an unknown name is refused everywhere.

A factory takes the study definition: what it needs (epochs for rungs, the seed) is there.
The seed makes a single worker's search repeat: samplers draw each trial from (seed, trial
number); Hyperband puts a trial in the bracket Optuna computes from the study name and the
trial number (no randomness to seed); the split and each trial's training are seeded from it
too (objectives/prepare.py, search/objective.py).
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


def trial_seed(seed: int, trial_number: int) -> int:
    """The sampler's seed for one trial: a function of the study's seed and the trial's number."""
    import numpy as np
    return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


def _reseed_per_trial(sampler_class):
    """`sampler_class`, reseeded before each trial from (study seed, trial number).

    Optuna's own `seed=` seeds one sampler object once: two workers given the same seed draw
    the same random configurations (each in its own trial), and Optuna's advice is a different
    seed per worker, which no longer repeats. Trial numbers are unique across workers, so
    seeding each trial from its number keeps workers apart and makes one worker repeat a run
    exactly: the same trials get the same draws and, training being seeded too, report the same
    values, so TPE and the pruner see the same history. Optuna has no per-trial seed, hence the
    private random states (`_rng`, and TPE's `_random_sampler` for its startup trials), the
    ones its own `reseed_rng` reseeds."""
    class Seeded(sampler_class):
        def __init__(self, seed: int, **kwargs):
            super().__init__(seed=seed, **kwargs)
            self.study_seed = seed

        def before_trial(self, study, trial) -> None:
            s = trial_seed(self.study_seed, trial.number)
            for sampler in (self, getattr(self, "_random_sampler", None)):
                if sampler is not None:
                    sampler._rng.rng.seed(s)
            super().before_trial(study, trial)

    Seeded.__name__ = Seeded.__qualname__ = f"Seeded{sampler_class.__name__}"
    return Seeded


def _tpe(definition: StudyDefinition):
    from optuna.samplers import TPESampler
    # Optuna 5's TPE default: multivariate + constant liar (parallel workers do not
    # all sample the same point), and it reads each trial's constraint (the budget).
    return _reseed_per_trial(TPESampler)(definition.seed)


def _random(definition: StudyDefinition):
    from optuna.samplers import RandomSampler
    return _reseed_per_trial(RandomSampler)(definition.seed)


PRUNERS: dict[str, Factory] = {"hyperband": _hyperband, "median": _median, "none": _no_pruning}
SAMPLERS: dict[str, Factory] = {"tpe": _tpe, "random": _random}
DEFAULT_PRUNER = "hyperband"
DEFAULT_SAMPLER = "tpe"


def check_name(what: str, registry: dict[str, Factory], name: str) -> str:
    if name not in registry:
        raise ValueError(f"{what}: must be one of {', '.join(registry)}, got {name!r}")
    return name
