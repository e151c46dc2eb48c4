"""What the search service costs per trial when many workers share one study.

Part 1 (load): M worker processes drive a real study on PostgreSQL, directly and through
PgBouncer (transaction mode): our TPE sampler over the default space, Optuna's heartbeat,
per-epoch report + resume-checkpoint upload (and removal of the previous one) + pruner,
model upload, tell; a sleep stands in for training. Per trial it reports the service seconds
(everything but the sleep) split into sampling (time inside the sampler, its reads of past
trials included), pruning (should_prune), artifacts (file write + metadata row) and storage
(the rest: ask, report, attributes, heartbeat setup, tell), plus errors and the most server
connections seen in pg_stat_activity. The worker processes never import torch.

Part 2 (TPE): the sampling time of one trial of our default space with 100 / 1,000 / 3,000
finished trials in the study, on PostgreSQL, with the sampler we ship and cheaper settings.

    .venv/bin/python benchmarks/storage_load.py --json benchmarks/results/storage_load.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _torchless_objectives() -> None:
    """objectives/__init__ exports the model builder, which imports torch; the space and
    counting modules do not. Register the package without running its __init__."""
    if "objectives" not in sys.modules:
        pkg = types.ModuleType("objectives")
        pkg.__path__ = [str(REPO / "objectives")]
        sys.modules["objectives"] = pkg


_torchless_objectives()

import optuna  # noqa: E402
from optuna.artifacts import FileSystemArtifactStore, upload_artifact  # noqa: E402

from objectives.counting import count_macs, count_params  # noqa: E402
from objectives.recipe import sample_recipe  # noqa: E402
from objectives.space import sample_arch  # noqa: E402
from search.definition import StudyDefinition, create_study, load_study  # noqa: E402
from core.trials import (ARCHITECTURE_ATTR, BUDGET_CONSTRAINT, CURVE_ATTR, MACS_ATTR, PARAMS_ATTR,  # noqa: E402
                           RECIPE_ATTR, RESUME_CHECKPOINT_ATTR, WORKER_ATTR)
from storage.artifacts import remove_artifact  # noqa: E402
from storage.database import make_storage, quiet_optuna  # noqa: E402

CONSTRAINT_KEY = f"constraints:{BUDGET_CONSTRAINT}"  # where Optuna stores a named constraint


class TimedSampler(optuna.samplers.BaseSampler):
    """Delegates to `inner`, adding up the seconds spent inside it."""

    def __init__(self, inner: optuna.samplers.BaseSampler):
        self.inner, self.seconds = inner, 0.0

    def _timed(self, name, *args, **kwargs):
        t = time.perf_counter()
        try:
            return getattr(self.inner, name)(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t

    def infer_relative_search_space(self, study, trial):
        return self._timed("infer_relative_search_space", study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._timed("sample_relative", study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._timed("sample_independent", study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        return self._timed("before_trial", study, trial)

    def after_trial(self, study, trial, state, values):
        return self._timed("after_trial", study, trial, state, values)


# ---- part 1: one worker process -----------------------------------------------------------


def write_result(result: dict, path: str | None) -> None:
    """The load average after the run beside the figures, then the JSON (when asked for)."""
    result["machine"]["load_after"] = os.getloadavg()
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


def record_sample(trial: optuna.Trial, definition) -> None:
    """Sample and record a configuration as search/objective.py does (its attributes, sizes and
    budget constraint), without building or training it."""
    arch = sample_arch(trial, definition.space.arch, definition.budget, definition.max_macs)
    recipe = sample_recipe(trial, definition.space.recipe)
    params = count_params(arch)
    trial.set_user_attr(PARAMS_ATTR, params)
    trial.set_user_attr(MACS_ATTR, count_macs(arch))
    trial.set_constraint(BUDGET_CONSTRAINT, float(params - definition.budget))
    trial.set_user_attr(ARCHITECTURE_ATTR, arch.to_dict())
    trial.set_user_attr(RECIPE_ATTR, recipe.to_dict())
    trial.set_user_attr(WORKER_ATTR, {"host": "bench", "pid": os.getpid()})

def run_worker(url: str, study_name: str, n_trials: int, epochs: int, epoch_sleep: float, artifacts: str,
               checkpoint_bytes: int, out: str) -> None:
    quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(url, heartbeat_interval=20, grace_period=60)
    study, definition = load_study(storage, study_name)
    study.sampler = sampler = TimedSampler(study.sampler)
    store = FileSystemArtifactStore(artifacts)
    payload = Path(tempfile.mkdtemp()) / "checkpoint.bin"
    payload.write_bytes(os.urandom(checkpoint_bytes))
    timers = {"pruning": 0.0, "artifacts": 0.0}
    counts = {"trials": 0, "errors": 0, "slept": 0.0}

    def timed(key, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers[key] += time.perf_counter() - t

    def objective(trial: optuna.Trial) -> float:
        record_sample(trial, definition)
        previous, curve, value = None, [], random.random()
        for epoch in range(1, epochs + 1):
            time.sleep(epoch_sleep)  # training
            counts["slept"] += epoch_sleep
            value = min(1.0, value + random.random() * 0.05)
            trial.report(value, epoch)
            curve.append({"epoch": epoch, "val_acc": value})
            trial.set_user_attr(CURVE_ATTR, curve)
            ckpt = timed("artifacts", upload_artifact, artifact_store=store, file_path=str(payload),
                         study_or_trial=trial, storage=storage)
            trial.set_user_attr(RESUME_CHECKPOINT_ATTR, {"artifact_id": ckpt, "epoch": epoch})
            if previous:
                timed("artifacts", remove_artifact, store, storage, trial._trial_id, previous)
            previous = ckpt
            if timed("pruning", trial.should_prune):
                raise optuna.TrialPruned()
        timed("artifacts", upload_artifact, artifact_store=store, file_path=str(payload), study_or_trial=trial,
              storage=storage)
        return value

    trials = []  # per trial: service seconds (all but the sleep) and its parts
    while len(trials) + counts["errors"] < n_trials:
        before = {"sampling": sampler.seconds, **timers, "slept": counts["slept"], "t": time.perf_counter()}
        try:
            study.optimize(objective, n_trials=1, gc_after_trial=False)
        except Exception as e:  # a storage error: count it and go on, as a worker does
            counts["errors"] += 1
            print(f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}", file=sys.stderr, flush=True)
            continue
        after = {"sampling": sampler.seconds, **timers, "slept": counts["slept"], "t": time.perf_counter()}
        trials.append({"service": (after["t"] - before["t"]) - (after["slept"] - before["slept"]),
                       **{k: after[k] - before[k] for k in ("sampling", "pruning", "artifacts")}})
    assert "torch" not in sys.modules, "a load worker imported torch"
    # The first trial of a process pays one-time costs (lazy imports, first queries): left out.
    Path(out).write_text(json.dumps({"trials": trials[1:], "warmup": trials[:1], "errors": counts["errors"]}))


# ---- part 1: the driver -------------------------------------------------------------------

def sample_connections(server_url: str, database: str, stop: threading.Event, seen: list[int]) -> None:
    import sqlalchemy
    engine = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as c:
        while not stop.wait(0.25):
            seen.append(c.execute(sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"),
                                  {"d": database}).scalar())
    engine.dispose()


def load_run(postgres, via: str, url: str, direct_url: str, m: int, args, workdir: Path) -> dict:
    name = f"load_{via}_{m}"
    setup = make_storage(url)
    create_study(setup, name, StudyDefinition())
    setup.engine.dispose()  # count the workers' connections only
    artifacts = workdir / name
    artifacts.mkdir()
    seen: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_connections, args=(postgres.url, direct_url.rsplit("/", 1)[1], stop, seen))
    sampler.start()
    outs = [workdir / f"{name}-{i}.json" for i in range(m)]
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", url, name, str(args.trials_per_worker), str(args.epochs),
                               str(args.epoch_sleep), str(artifacts), str(args.checkpoint_bytes), str(out)],
                              stderr=(workdir / f"{name}-{i}.err").open("w"), env=dict(os.environ, OMP_NUM_THREADS="1"))
             for i, out in enumerate(outs)]
    codes = [p.wait() for p in procs]
    stop.set()
    sampler.join()
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    trials = [t for r in results for t in r["trials"]]
    n = max(len(trials), 1)
    per_trial = {k: sum(t[k] for t in trials) / n for k in ("service", "sampling", "pruning", "artifacts")}
    per_trial["storage"] = per_trial["service"] - per_trial["sampling"] - per_trial["pruning"] - per_trial["artifacts"]
    services = sorted(t["service"] for t in trials) or [0.0]
    row = {"via": via, "workers": m, "trials_timed": len(trials),
           "trials_total": len(trials) + sum(len(r["warmup"]) for r in results),
           **{f"{k}_s": round(v, 4) for k, v in per_trial.items()},
           "service_p95_s": round(services[int(0.95 * (len(services) - 1))], 4),
           "errors": sum(r["errors"] for r in results), "failed_processes": sum(c != 0 for c in codes),
           "max_server_connections": max(seen, default=0)}
    print(json.dumps(row), flush=True)
    return row


# ---- part 2: TPE's sampling time against history ------------------------------------------

def history(definition: StudyDefinition, n: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    """n finished trials of our space: random configs, accuracy-like values, the budget constraint."""
    rng = random.Random(seed)
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = []
    for _ in range(n):
        t = scratch.ask()
        arch = sample_arch(t, definition.space.arch, definition.budget)
        sample_recipe(t, definition.space.recipe)
        over = float(count_params(arch) - definition.budget)
        scratch.tell(t, 0.0)
        frozen = scratch._storage.get_trial(t._trial_id)  # not study.trials: it copies them all
        trials.append(optuna.trial.create_trial(params=frozen.params, distributions=frozen.distributions,
                                                value=0.0 if over > 0 else 0.5 + 0.45 * rng.random(),
                                                system_attrs={CONSTRAINT_KEY: over}))
    return trials


def tpe_time(study: optuna.Study, definition: StudyDefinition, sampler, repeats: int) -> float:
    study.sampler = timed = TimedSampler(sampler)
    times = []
    for _ in range(repeats):
        timed.seconds = 0.0
        t = study.ask()
        sample_arch(t, definition.space.arch, definition.budget)
        sample_recipe(t, definition.space.recipe)
        times.append(timed.seconds)
        study.tell(t, state=optuna.trial.TrialState.FAIL)  # not part of the history the next ask sees
    return sorted(times)[len(times) // 2]


def tpe_runs(postgres, sizes: list[int], repeats: int) -> list[dict]:
    definition = StudyDefinition()
    variants = {"shipped": definition.make_sampler}
    rows = []
    for n in sizes:
        url = postgres.new_database()
        storage = make_storage(url)
        study = optuna.create_study(storage=storage, study_name=f"tpe{n}", direction="maximize")
        study.add_trials(history(definition, n))
        for name, make in {"optuna_default": lambda: optuna.samplers.TPESampler(), **variants}.items():
            seconds = tpe_time(study, definition, make(), repeats)
            row = {"finished_trials": n, "sampler": name, "median_sampling_s": round(seconds, 4),
                   "share_of_60s_trial": round(seconds / 60, 4)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="8,32,64", help="M values (default 8,32,64)")
    p.add_argument("--via", default="direct,pgbouncer")
    p.add_argument("--trials-per-worker", type=int, default=2, help="trials each worker runs; its first, a warm-up, "
                                                                     "is left out of the figures (default 2)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epoch-sleep", type=float, default=10.0, help="seconds of 'training' per epoch (default 10)")
    p.add_argument("--checkpoint-bytes", type=int, default=1 << 20)
    p.add_argument("--tpe-sizes", default="100,1000,3000")
    p.add_argument("--tpe-repeats", type=int, default=5)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-tpe", action="store_true")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        url, name, n_trials, epochs, sleep, artifacts, nbytes, out = args.worker
        run_worker(url, name, int(n_trials), int(epochs), float(sleep), artifacts, int(nbytes), out)
        return

    from tests.fleet_servers import PgBouncer
    from tests.servers import PostgresServer
    quiet_optuna()
    postgres = PostgresServer().start()
    bouncer = PgBouncer(postgres, pool_size=20, max_client_conn=1000).start()
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
                    "settings": {k: getattr(args, k) for k in ("trials_per_worker", "epochs", "epoch_sleep", "checkpoint_bytes")},
                    "postgres": "Debian PostgreSQL, max_connections 200 (tests/servers.py)",
                    "pgbouncer": "transaction mode, default_pool_size 20", "load": [], "tpe": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if not args.skip_load:
                for m in [int(x) for x in args.workers.split(",")]:
                    for via in args.via.split(","):
                        direct = postgres.new_database()
                        url = bouncer.url(direct) if via == "pgbouncer" else direct
                        result["load"].append(load_run(postgres, via, url, direct, m, args, Path(tmp)))
            if not args.skip_tpe:
                result["tpe"] = tpe_runs(postgres, [int(x) for x in args.tpe_sizes.split(",")], args.tpe_repeats)
    finally:
        bouncer.stop()
        postgres.remove()
    write_result(result, args.json)


if __name__ == "__main__":
    main()
