"""What sampling needs from a trial, shared by the architecture and recipe spaces (a module of
its own so that neither space imports the other for it)."""
from __future__ import annotations

from typing import Any, Protocol


class TrialLike(Protocol):  # optuna.Trial, FixedTrial, or anything with the suggest API
    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


# A range with equal ends, or a single choice, is no choice: no parameter is sampled (trials of
# spaces that fix it look as they did before it was searchable).
def suggest_range(trial: TrialLike, name: str, lo_hi: tuple, log: bool = False) -> float:
    lo, hi = lo_hi
    return float(lo) if lo == hi else trial.suggest_float(name, lo, hi, log=log)


def suggest_choice(trial: TrialLike, name: str, choices: tuple) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)
