"""What a study has done: counts by state, the best trial, throughput, recent failures."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.architecture import ArchConfig
from .eta import _now, progress_to_target, target_reached_message, time_by_state
from .progress import format_duration, plural
from storage.requeue import MAX_STALE_RETRIES, needs_retry, retry_history, retry_of
from core.trials import (ARCHITECTURE_ATTR, FAIL_REASON_ATTR, REQUEUED_ATTR, INFEASIBLE_STATE, MACS_ATTR, MODEL_ARTIFACT_ATTR,
                     PARAMS_ATTR, RECIPE_ATTR, STATE_NAMES, TEST_ACC_ATTR, VAL_ACC_ATTR, accuracy_label, best_feasible,
                     counts_as_trained, flip_averaged, state_name)


def _per_hour(timed: list[FrozenTrial], end) -> float:
    """Trained trials per hour from the first one's start to `end`."""
    hours = max((end - min(t.datetime_start for t in timed)).total_seconds(), 1.0) / 3600
    return len(timed) / hours


def best_trial(study: optuna.Study, definition) -> tuple[FrozenTrial | None, str]:
    """The trial every command names as the study's best, and how it was chosen: validation
    selects. A search's best is Optuna's (its value is validation accuracy); a finalize study's
    values are test accuracies, so its best is `export-best --final`'s choice, never the top test."""
    if definition is not None and definition.final is not None:
        from .finalize import best_final
        try:
            return best_final(study, definition)
        except ValueError:  # no finished final run yet
            return None, ""
    return best_feasible(study), "best validation accuracy"


def summarize(study: optuna.Study, definition=None) -> dict[str, Any]:
    """What `search status` says of `study`; give its definition so a finalize study's best is
    chosen as `export-best --final` chooses it."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): 0 for s in TrialState}
    counts[INFEASIBLE_STATE] = 0
    for t in trials:
        counts[state_name(t)] += 1
    trained = [t for t in trials if counts_as_trained(t)]
    timed = [t for t in trained if t.datetime_start and t.datetime_complete]
    per_hour = round(_per_hour(timed, max(t.datetime_complete for t in timed)), 1) if timed else None
    best, chosen_by = best_trial(study, definition)
    best_info = None
    if best is not None:
        arch = best.user_attrs.get(ARCHITECTURE_ATTR, {})
        final = TEST_ACC_ATTR in best.user_attrs  # a final run: its value is its test accuracy
        best_info = {
            "trial": best.number, "chosen_by": chosen_by,
            "val_acc": best.user_attrs.get(VAL_ACC_ATTR) if final else best.value,
            "test_acc": best.user_attrs.get(TEST_ACC_ATTR), "flip_averaging": flip_averaged(best.user_attrs),
            "params": best.user_attrs.get(PARAMS_ATTR),
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
    lines = [f"study {s['study']}: {plural(s['trials'], 'trial')}",
             "  " + ", ".join(f"{k} {c[k]}" for k in STATE_NAMES),
             f"  trained trials per hour: {s['trials_per_hour'] if s['trials_per_hour'] is not None else '-'}"]
    lines += _progress_lines(s)
    b = s["best"]
    if b:
        r = b["recipe"]
        stages = " ".join(f"{bl}x{ch} {kind}(F{f},K{k})" for bl, ch, f, k, kind in b["stages"])
        accuracies = [accuracy_label(split, b[key], b["flip_averaging"])
                      for split, key in (("val", "val_acc"), ("test", "test_acc")) if b.get(key) is not None]
        lines += [f"  best (by {b['chosen_by']}): trial {b['trial']}, {', '.join(accuracies)}, {b['params']:,} params, "
                  f"{b['macs'] / 1e6:.1f} MMACs",
                  f"    stages {stages}, pool {b['pool_kernel']}",
                  f"    {r.get('optimizer')} lr {r.get('lr', 0):.3g}, batch {r.get('batch_size')}, "
                  f"{r.get('schedule')}, {plural(r.get('epochs') or 0, 'epoch')}"]
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
        what = f"{p['trained']}/{p['target']} trained trials" if p["target"] is not None else plural(p['trained'], 'trained trial')
        if p["eta_of"] == "target":
            eta = f"about {format_duration(p['eta_seconds'])} to the target at the measured rate"
        elif p["eta_of"] == "timeout" and p["eta_seconds"] > 0:
            eta = f"the timeout ends work in {format_duration(p['eta_seconds'])} ({p['deadline']})"
        elif p["eta_of"] == "timeout":
            eta = (f"the last worker's --timeout passed at {p['deadline']}; a worker started again (the same "
                   f"command) goes on")
        else:
            eta = "no rate measured yet"
        lines.append(f"  target: {what}; {eta}")
    if s["seconds_by_state"]:
        lines.append("  time spent: " + ", ".join(f"{state} {format_duration(sec)}"
                                                  for state, sec in sorted(s["seconds_by_state"].items())))
    return lines
