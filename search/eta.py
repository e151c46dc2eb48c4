"""How far a study is from done: its target (trained trials, stored when a worker is given
`--n-trials`) or its deadline (`--timeout`), time spent by state, and an ETA from the
measured rate. Optuna keeps no notion of a study-wide target, so the study's user
attributes carry them, where every worker and `search status` see the same values."""
from __future__ import annotations

import datetime as dt
from typing import Any

import optuna
from optuna.trial import TrialState

from core.trials import state_name, trained_trials

TARGET_ATTR = "target_trials"
DEADLINE_ATTR = "deadline"  # ISO 8601 UTC: the latest `--timeout` of a worker


def _now() -> dt.datetime:
    return dt.datetime.now()  # Optuna stores naive local datetimes for trials


def record_run_limits(study: optuna.Study, n_trials: int | None, timeout: float | None) -> None:
    if n_trials is not None:
        study.set_user_attr(TARGET_ATTR, n_trials)
    if timeout is not None:
        study.set_user_attr(DEADLINE_ATTR, (_now() + dt.timedelta(seconds=timeout)).isoformat(timespec="seconds"))


def time_by_state(trials: list[optuna.trial.FrozenTrial], now: dt.datetime | None = None) -> dict[str, float]:
    """Seconds of trial time per state (a running trial counts up to now)."""
    now = now or _now()
    out: dict[str, float] = {}
    for t in trials:
        if t.datetime_start is None:
            continue
        end = t.datetime_complete or (now if t.state == TrialState.RUNNING else None)
        if end is not None:
            out[state_name(t)] = out.get(state_name(t), 0.0) + max(0.0, (end - t.datetime_start).total_seconds())
    return {k: round(v, 1) for k, v in out.items()}


def progress_to_target(study: optuna.Study, trained: int, per_hour: float | None,
                       now: dt.datetime | None = None) -> dict[str, Any]:
    """{target, trained, reached, eta_seconds, eta_of ('target' | 'timeout' | None), deadline}."""
    now = now or _now()
    target = study.user_attrs.get(TARGET_ATTR)
    deadline = study.user_attrs.get(DEADLINE_ATTR)
    left_to_deadline = None
    if deadline:
        left_to_deadline = max(0.0, (dt.datetime.fromisoformat(deadline) - now).total_seconds())
    eta, eta_of = None, None
    reached = target is not None and trained >= target
    if target is not None and not reached and per_hour:
        eta, eta_of = (target - trained) / per_hour * 3600, "target"
    if left_to_deadline is not None and not reached and (eta is None or left_to_deadline < eta):
        eta, eta_of = left_to_deadline, "timeout"
    return {"target": target, "trained": trained, "reached": reached,
            "eta_seconds": round(eta, 1) if eta is not None else None, "eta_of": eta_of, "deadline": deadline}


def target_reached_message(trained: int, target: int) -> str:
    return f"{trained}/{target} trained trials; nothing to do: raise --n-trials"


def say_if_target_reached(study: optuna.Study, n_trials: int | None, timeout: float | None) -> bool:
    """Store this run's limits in the study; True (after saying so) if `n_trials` is already met,
    so `search run`/`worker` on a finished study answers instead of exiting silently."""
    record_run_limits(study, n_trials, timeout)
    if n_trials is None:
        return False
    trained = trained_trials(study)
    if trained >= n_trials:
        print(f"study {study.study_name}: {target_reached_message(trained, n_trials)}", flush=True)
        return True
    return False
