"""What a study has done: counts by state, the best trial, throughput, recent failures."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.architecture import ArchConfig
from .eta import _now, progress_to_target, target_reached_message, time_by_state
from .progress import format_duration
from storage.requeue import MAX_STALE_RETRIES, needs_retry, retry_history, retry_of
from core.trials import (ARCHITECTURE_ATTR, FAIL_REASON_ATTR, REQUEUED_ATTR, INFEASIBLE_STATE, MACS_ATTR, MODEL_ARTIFACT_ATTR,
                     PARAMS_ATTR, RECIPE_ATTR, STATE_NAMES, best_feasible, counts_as_trained, state_name)


def _per_hour(timed: list[FrozenTrial], end) -> float:
    """Trained trials per hour from the first one's start to `end`."""
    hours = max((end - min(t.datetime_start for t in timed)).total_seconds(), 1.0) / 3600
    return len(timed) / hours


def summarize(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): 0 for s in TrialState}
    counts[INFEASIBLE_STATE] = 0
    for t in trials:
        counts[state_name(t)] += 1
    trained = [t for t in trials if counts_as_trained(t)]
    timed = [t for t in trained if t.datetime_start and t.datetime_complete]
    per_hour = round(_per_hour(timed, max(t.datetime_complete for t in timed)), 1) if timed else None
    best = best_feasible(study)
    best_info = None
    if best is not None:
        arch = best.user_attrs.get(ARCHITECTURE_ATTR, {})
        best_info = {
            "trial": best.number, "val_acc": best.value, "params": best.user_attrs.get(PARAMS_ATTR),
            "macs": best.user_attrs.get(MACS_ATTR),
            "stages": [(s.blocks, s.channels, s.conv_kernel, s.skip_kernel, s.block)
                       for s in (ArchConfig.from_dict(arch).stages if arch else ())],
            "pool_kernel": arch.get("pool_kernel"),
            "recipe": {k: v for k, v in best.user_attrs.get(RECIPE_ATTR, {}).items()
                       if k in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "epochs", "batch_size",
                                "cutout", "mixup_alpha", "label_smoothing", "ema_decay")},
            "has_checkpoint": bool(best.user_attrs.get(MODEL_ARTIFACT_ATTR)),
        }
    rate = per_hour
    if timed and any(t.state == TrialState.RUNNING for t in trials):  # measured up to now while work goes on
        rate = _per_hour(timed, _now())
    progress = progress_to_target(study, len(trained), rate)
    failures = [{"trial": t.number, "reason": _failure(t, trials)} for t in trials if t.state == TrialState.FAIL][-5:]
    return {"study": study.study_name, "trials": len(trials), "counts": counts, "trials_per_hour": per_hour,
            "best": best_info, "recent_failures": failures, "progress": progress,
            "seconds_by_state": time_by_state(trials)}


def _failure(t: FrozenTrial, trials: list[FrozenTrial]) -> str:
    """Why a FAIL ended, and whether a retry carries on its work: "re-queued" only when one exists."""
    reason = t.user_attrs.get(FAIL_REASON_ATTR) or "worker lost (heartbeat stale)"
    if not needs_retry(t):
        return reason  # NaN, OOM: over, nobody retries it
    reason = reason.split("; re-queued")[0]  # said once, below, with the retry that exists
    retry = retry_of(trials, t.number)
    if retry is not None:
        return f"{reason}; re-queued as trial {retry.number}"
    if t.state == TrialState.FAIL and len(retry_history(t)) + 1 > MAX_STALE_RETRIES and not t.user_attrs.get(REQUEUED_ATTR):
        return f"{reason}; not re-queued ({MAX_STALE_RETRIES} retries spent)"
    return f"{reason}; not re-queued"


def format_summary(s: dict[str, Any]) -> str:
    c = s["counts"]
    lines = [f"study {s['study']}: {s['trials']} trials",
             "  " + ", ".join(f"{k} {c[k]}" for k in STATE_NAMES),
             f"  trained trials per hour: {s['trials_per_hour'] if s['trials_per_hour'] is not None else '-'}"]
    lines += _progress_lines(s)
    b = s["best"]
    if b:
        r = b["recipe"]
        stages = " ".join(f"{bl}x{ch} {kind}(F{f},K{k})" for bl, ch, f, k, kind in b["stages"])
        metric = "test_acc" if s.get("final") else "val_acc"  # a finalize study's value is test accuracy
        lines += [f"  best: trial {b['trial']}, {metric} {b['val_acc']:.4f}, {b['params']:,} params, "
                  f"{b['macs'] / 1e6:.1f} MMACs",
                  f"    stages {stages}, pool {b['pool_kernel']}",
                  f"    {r.get('optimizer')} lr {r.get('lr', 0):.3g}, batch {r.get('batch_size')}, "
                  f"{r.get('schedule')}, {r.get('epochs')} epochs"]
    else:
        lines.append("  best: none yet")
    for f in s["recent_failures"]:
        lines.append(f"  failed trial {f['trial']}: {f['reason']}")
    return "\n".join(lines)


def _progress_lines(s: dict[str, Any]) -> list[str]:
    p, lines = s["progress"], []
    if p["reached"]:
        lines.append(f"  target: {target_reached_message(p['trained'], p['target'])}")
    elif p["target"] is not None or p["deadline"]:
        what = f"{p['trained']}/{p['target']} trained trials" if p["target"] is not None else f"{p['trained']} trained trials"
        if p["eta_of"] == "target":
            eta = f"about {format_duration(p['eta_seconds'])} to the target at the measured rate"
        elif p["eta_of"] == "timeout" and p["eta_seconds"] > 0:
            eta = f"the timeout ends work in {format_duration(p['eta_seconds'])} ({p['deadline']})"
        elif p["eta_of"] == "timeout":
            eta = f"the timeout passed at {p['deadline']}: raise --timeout to go on"
        else:
            eta = "no rate measured yet"
        lines.append(f"  target: {what}; {eta}")
    if s["seconds_by_state"]:
        lines.append("  time spent: " + ", ".join(f"{state} {format_duration(sec)}"
                                                  for state, sec in sorted(s["seconds_by_state"].items())))
    return lines
