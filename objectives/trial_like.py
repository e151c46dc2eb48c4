"""What sampling needs from a trial, shared by the architecture and recipe spaces (a module of
its own so that neither space imports the other for it)."""
from __future__ import annotations

from typing import Any, Protocol


class TrialLike(Protocol):  # optuna.Trial, FixedTrial, or anything with the suggest API
    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
