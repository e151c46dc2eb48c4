"""What one ask+tell of a worker costs against the finished and RUNNING trials of a study.

One study on a real PostgreSQL (tests/servers.py), our space and sampler (TPE, constant
liar) and pruner (Hyperband). The history is written by bulk INSERTs into Optuna's tables, not
by running workers: F finished trials (random configurations of the default space, each with
the user attributes a trained trial carries), then R RUNNING ones that look like a peer's
trial in flight: its params, the relative params TPE shares for the constant liar, a curve, a
Hyperband rung, and a heartbeat (dated a day ahead: the stale-trial check reads it, fails none).

Per R, the same process runs the worker's per-trial path (`study.optimize(n_trials=1)`:
the stale-trial check, ask with the WAITING pop, the objective's sampling and attributes,
one epoch's report and should_prune, tell, then the `--n-trials` check), once to read what
the step added (left out), then `--repeats` times,
through two storages side by side, each a long-lived worker (one process, its cache kept
across the steps):

- optuna: Optuna's RDB cache as `optuna.load_study` builds it, and Optuna's stale-trial check
  (what workers ran before);
- snapshot: the worker's storage (storage/snapshot.py, and storage/heartbeat.py's check).

Each row: medians of ask_tell_s (the path above, should_prune aside), ask_tell_cpu_s (its CPU
seconds in this process, should_prune included: the machine's load aside), sampler_s (inside the
sampler, its reads included), reads_s (inside the storage's trial-list reads, any caller),
prune_s (one should_prune) and target_s (the `--n-trials` check).

    .venv/bin/python benchmarks/ask_cost.py --json benchmarks/results/ask_cost.json
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from storage_load import TimedSampler, history, record_sample, write_result  # noqa: E402  (torch-free import of objectives, random finished trials)

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search.definition import StudyDefinition, create_study, load_study  # noqa: E402
from core.trials import (ARCHITECTURE_ATTR, CURVE_ATTR, MACS_ATTR, PARAMS_ATTR,  # noqa: E402
                           RECIPE_ATTR, RESUME_CHECKPOINT_ATTR, WORKER_ATTR, trained_trials)
from storage.database import make_storage, quiet_optuna  # noqa: E402

STUDY = "askcost"
RELATIVE_PARAMS_KEY = "tpe:relative_params"  # where TPE's constant liar shares a running trial's relative params


def dressed(trial: optuna.trial.FrozenTrial, rng: random.Random, state: TrialState) -> optuna.trial.FrozenTrial:
    """`trial` (params, value, constraint) with what a worker records on a real one."""
    curve = [{"epoch": e, "val_acc": round(0.3 + 0.05 * e + 0.1 * rng.random(), 4), "train_loss": 1.0 / e,
              "seconds": 3.0} for e in range(1, rng.randint(2, 10))]
    user_attrs = {PARAMS_ATTR: rng.randint(1_000_000, 5_000_000), MACS_ATTR: rng.randint(10 ** 8, 10 ** 9),
                  ARCHITECTURE_ATTR: {"stages": [{"blocks": 2, "channels": 64 * 2 ** i, "kernel": 3} for i in range(4)],
                                      "stem": "conv3", "se": True, "activation": "relu", "dropout": 0.1},
                  RECIPE_ATTR: {"epochs": 20, "batch_size": 512, "lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4,
                                "label_smoothing": 0.2, "optimizer": "sgd"},
                  WORKER_ATTR: {"host": "bench", "pid": 1}, CURVE_ATTR: curve}
    system_attrs = dict(trial.system_attrs)
    if state == TrialState.RUNNING:
        user_attrs[RESUME_CHECKPOINT_ATTR] = {"artifact_id": "x" * 36, "trial_id": 0, "epoch": len(curve)}
        system_attrs[f"{RELATIVE_PARAMS_KEY}:0"] = json.dumps({k: v for k, v in list(trial.params.items())[:8]})
        system_attrs["completed_rung_0"] = curve[0]["val_acc"]
    return optuna.trial.create_trial(
        state=state, params=trial.params, distributions=trial.distributions,
        value=trial.value if state.is_finished() else None, user_attrs=user_attrs, system_attrs=system_attrs,
        intermediate_values={c["epoch"]: c["val_acc"] for c in curve})


def populate(storage, study: optuna.Study, definition: StudyDefinition, n: int, state: TrialState, seed: int) -> float:
    """Add n trials in `state` in a few bulk INSERTs into Optuna's tables (`study.add_trials`
    writes one trial per transaction, about a second each on a loaded 2-core machine); returns
    the seconds it took. The rows are what RDBStorage writes for the same FrozenTrial."""
    import datetime as dt

    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    rng = random.Random(seed)
    started = time.perf_counter()
    trials = [dressed(t, rng, state) for t in history(definition, n, seed)]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # RDBStorage stores naive UTC
    with storage.engine.begin() as c:
        first = c.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(models.TrialModel.__table__)
                          .where(models.TrialModel.study_id == study._study_id)).scalar()
        c.execute(sqlalchemy.insert(models.TrialModel.__table__), [
            {"number": first + i, "study_id": study._study_id, "state": state.name, "datetime_start": now,
             "datetime_complete": now if state.is_finished() else None} for i in range(n)])
        ids = dict(c.execute(sqlalchemy.select(models.TrialModel.number, models.TrialModel.trial_id)
                             .where(models.TrialModel.study_id == study._study_id, models.TrialModel.number >= first)).all())
        rows: dict = {"params": [], "values": [], "user": [], "system": [], "steps": []}
        for i, t in enumerate(trials):
            tid = ids[first + i]
            rows["params"] += [{"trial_id": tid, "param_name": k, "param_value": t.distributions[k].to_internal_repr(v),
                                "distribution_json": distribution_to_json(t.distributions[k])} for k, v in t.params.items()]
            if t.value is not None:
                rows["values"].append({"trial_id": tid, "objective": 0, "value": t.value, "value_type": "FINITE"})
            rows["user"] += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in t.user_attrs.items()]
            rows["system"] += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in t.system_attrs.items()]
            rows["steps"] += [{"trial_id": tid, "step": k, "intermediate_value": v, "intermediate_value_type": "FINITE"}
                              for k, v in t.intermediate_values.items()]
        if state == TrialState.RUNNING:  # beating: every stale-trial check reads them (dated ahead so none goes stale)
            c.execute(sqlalchemy.insert(models.TrialHeartbeatModel.__table__),
                      [{"trial_id": ids[first + i], "heartbeat": now + dt.timedelta(days=1)} for i in range(n)])
        for key, model in (("params", models.TrialParamModel), ("values", models.TrialValueModel),
                           ("user", models.TrialUserAttributeModel), ("system", models.TrialSystemAttributeModel),
                           ("steps", models.TrialIntermediateValueModel)):
            if rows[key]:
                c.execute(sqlalchemy.insert(model.__table__), rows[key])
    return time.perf_counter() - started


def one_trial(study: optuna.Study, definition: StudyDefinition) -> dict:
    """The worker's per-trial path once, as search/objective.py and search/worker.py run it."""
    parts = {"prune_s": 0.0, "target_s": 0.0}

    def objective(trial: optuna.Trial) -> float:
        record_sample(trial, definition)
        trial.report(0.5, 1)
        t = time.perf_counter()
        trial.should_prune()
        parts["prune_s"] = time.perf_counter() - t
        return 0.6

    def after_trial(study, trial) -> None:
        t = time.perf_counter()
        trained_trials(study)  # the --n-trials check after every trial
        parts["target_s"] = time.perf_counter() - t

    t, cpu = time.perf_counter(), time.process_time()
    study.optimize(objective, n_trials=1, callbacks=[after_trial])
    # ask+tell: everything the service does around one trial, the pruning check aside (once per epoch).
    # Its CPU seconds in this process (PostgreSQL's aside) say what it costs on a core of its own.
    return {"ask_tell_s": time.perf_counter() - t - parts["prune_s"], "ask_tell_cpu_s": time.process_time() - cpu, **parts}


def variants() -> dict:
    from storage.snapshot import worker_study_storage

    def before(rdb):
        rdb._get_stale_trial_ids = functools.partial(optuna.storages.RDBStorage._get_stale_trial_ids, rdb)
        return rdb  # optuna.load_study wraps it in Optuna's _CachedStorage
    return {"optuna": before, "snapshot": worker_study_storage}


class Worker:
    """One long-lived worker's study on one storage: its first trial reads the whole study
    (left out, as a worker pays it once at start); later steps reuse its warm cache."""

    def __init__(self, url: str, wrap, definition: StudyDefinition):
        self.rdb = make_storage(url, heartbeat_interval=20, grace_period=60)
        self.study, _ = load_study(wrap(self.rdb), STUDY)
        self.definition = definition
        # Where the time goes: inside the sampler (its own reads included), and inside the
        # storage's trial-list reads (whoever asks: the pop, TPE, Hyperband, the target check).
        self.study.sampler = self.sampler = TimedSampler(self.study.sampler)
        self.reads = 0.0
        storage, read = self.study._storage, self.study._storage.get_all_trials

        def timed_read(*args, **kwargs):
            t = time.perf_counter()
            try:
                return read(*args, **kwargs)
            finally:
                self.reads += time.perf_counter() - t
        storage.get_all_trials = timed_read
        self.warmup_s = one_trial(self.study, definition)["ask_tell_s"]

    def trial(self) -> dict:
        sampler, reads = self.sampler.seconds, self.reads
        return {**one_trial(self.study, self.definition), "sampler_s": self.sampler.seconds - sampler,
                "reads_s": self.reads - reads}

    def measure(self, repeats: int) -> dict:
        self.trial()  # reads the trials added since the last step, once
        runs = [self.trial() for _ in range(repeats)]
        return {**{k: round(statistics.median(r[k] for r in runs), 3)
                   for k in ("ask_tell_s", "ask_tell_cpu_s", "sampler_s", "reads_s", "prune_s", "target_s")},
                "ask_tell_runs_s": [round(r["ask_tell_s"], 3) for r in runs], "load_avg": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--finished", type=int, default=5000)
    p.add_argument("--running", default="0,100,1000", help="RUNNING trials, cumulative steps (default 0,100,1000)")
    p.add_argument("--repeats", type=int, default=3, help="timed trials per storage and step, after one warm-up")
    p.add_argument("--variants", default="optuna,snapshot")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    from tests.servers import PostgresServer
    quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    chosen = {k: v for k, v in variants().items() if k in args.variants.split(",")}
    definition = StudyDefinition()
    postgres = PostgresServer().start()
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
                    "settings": {"finished": args.finished, "repeats": args.repeats,
                                 "postgres": "Debian PostgreSQL on loopback (tests/servers.py)",
                                 "sampler": "TPE (Optuna 5 default: multivariate, constant liar)",
                                 "pruner": "hyperband"},
                    "rows": []}
    try:
        url = postgres.new_database()
        setup = make_storage(url)
        study = create_study(setup, STUDY, definition)
        result["populate_finished_s"] = round(populate(setup, study, definition, args.finished, TrialState.COMPLETE, 0), 1)
        workers = {name: Worker(url, wrap, definition) for name, wrap in chosen.items()}
        result["warmup_ask_tell_s"] = {name: round(w.warmup_s, 1) for name, w in workers.items()}
        have = 0
        for running in [int(x) for x in args.running.split(",")]:
            if running > have:
                populate(setup, study, definition, running - have, TrialState.RUNNING, running)
                have = running
            rows = {}
            for name, worker in workers.items():
                rows[name] = {"storage": name, "running": running, **worker.measure(args.repeats)}
                print(json.dumps(rows[name]), flush=True)
            if "optuna" in rows and "snapshot" in rows:
                rows["snapshot"]["speedup_vs_optuna"] = round(rows["optuna"]["ask_tell_s"] / rows["snapshot"]["ask_tell_s"], 1)
            result["rows"].extend(rows.values())
        setup.engine.dispose()
    finally:
        postgres.remove()
    write_result(result, args.json)


if __name__ == "__main__":
    main()
