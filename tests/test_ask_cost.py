"""The worker's storage (storage/snapshot.py) on a real PostgreSQL: what it reads per trial does
not grow with the trials RUNNING, and what users rely on still holds through it: a queued trial
is taken before a new one is sampled, by one worker only; a peer's finished trial reaches the
sampler within the refresh interval; a dead worker's trial is failed and its retry taken first."""
from __future__ import annotations

import threading
import time

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.definition import StudyDefinition, create_study, load_study
from core.trials import trained_trials
from storage.database import make_storage, quiet_optuna
from storage.snapshot import REREAD_RUNNING, SnapshotStorage

STUDY = "s"
# ask() outside optimize() with a heartbeat, as a test drives a worker's study by hand
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage", "ignore::optuna.exceptions.ExperimentalWarning")
quiet_optuna()
optuna.logging.set_verbosity(optuna.logging.ERROR)


def objective(trial: optuna.Trial) -> float:
    """A few params (one conditional, as our space has), one epoch reported and judged."""
    x = trial.suggest_float("x", 0.0, 1.0)
    n = trial.suggest_int("n", 1, 3)
    for i in range(n):
        trial.suggest_int(f"width{i}", 8, 64)
    trial.report(x, 1)
    trial.should_prune()
    return x


def peer_trial(number: int, state: TrialState) -> optuna.trial.FrozenTrial:
    """A trial as another worker's looks: params, a curve, the attributes a trained one carries."""
    x = (number % 97) / 97
    return optuna.trial.create_trial(
        state=state, value=x if state == TrialState.COMPLETE else None,
        params={"x": x, "n": 1, "width0": 8 + number % 50},
        distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0),
                       "n": optuna.distributions.IntDistribution(1, 3),
                       "width0": optuna.distributions.IntDistribution(8, 64)},
        user_attrs={"curve": [{"epoch": 1, "val_acc": x}], "architecture": {"widths": [8, 16, 32]}},
        intermediate_values={1: x})


@pytest.fixture
def url(postgres):
    storage = make_storage(u := postgres.new_database())
    create_study(storage, STUDY, StudyDefinition())
    storage.engine.dispose()
    return u


def worker_study(url: str, **kwargs) -> optuna.Study:
    study, _ = load_study(SnapshotStorage(make_storage(url, **kwargs)), STUDY)
    return study


def plain_study(url: str) -> optuna.Study:
    return load_study(make_storage(url), STUDY)[0]


def rows_read_by_one_trial(study: optuna.Study) -> int:
    """Rows the database returned to this study's storage during one trial (ask to tell)."""
    engine = study._storage._backend.engine  # both caches wrap the RDBStorage as _backend
    rows = [0]

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
            rows[0] += cursor.rowcount

    sqlalchemy.event.listen(engine, "after_cursor_execute", count)
    try:
        study.optimize(objective, n_trials=1)
    finally:
        sqlalchemy.event.remove(engine, "after_cursor_execute", count)
    return rows[0]


def test_rows_read_per_trial_do_not_grow_with_running_trials(url):
    peers = plain_study(url)
    peers.add_trials([peer_trial(i, TrialState.COMPLETE) for i in range(20)])
    worker, optuna_cache = worker_study(url), plain_study(url)
    counts, have = {}, 0
    for running in (2 * REREAD_RUNNING, 6 * REREAD_RUNNING):
        peers.add_trials([peer_trial(i, TrialState.RUNNING) for i in range(have, running)])
        have = running
        for study in (worker, optuna_cache):
            # The peers' new trials are read once, as by any cache; then each trial's refresh
            # re-reads the REREAD_RUNNING trials held longest (steady from the second on).
            study.optimize(objective, n_trials=2)
        counts[running] = {"worker": rows_read_by_one_trial(worker), "optuna": rows_read_by_one_trial(optuna_cache)}
    few, many = counts[2 * REREAD_RUNNING], counts[6 * REREAD_RUNNING]
    # Optuna's own cache re-reads every RUNNING trial whole, several times per trial: the
    # measure sees it grow with them. The worker's reads stay flat (the same bounded re-reads).
    assert many["optuna"] > 2 * few["optuna"], counts
    assert many["worker"] <= 1.2 * few["worker"] + 10, counts
    assert many["worker"] * 5 < many["optuna"], counts


def test_a_queued_trial_is_taken_before_a_new_one_is_sampled(url):
    worker = worker_study(url)
    worker.optimize(objective, n_trials=2)  # the view is fresh: the next pop must not trust it
    plain_study(url).enqueue_trial({"x": 0.25, "n": 1, "width0": 9})
    trial = worker.ask()
    assert trial.number == 2
    assert objective(trial) == 0.25 and trial.params["width0"] == 9


def test_two_workers_never_take_the_same_queued_trial(url):
    peers = plain_study(url)
    for i in range(12):
        peers.enqueue_trial({"x": i / 12})
    taken: dict[str, list[int]] = {"a": [], "b": []}

    def work(name: str) -> None:
        study = worker_study(url)
        for _ in range(6):
            taken[name].append(study.ask().number)

    threads = [threading.Thread(target=work, args=(name,)) for name in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken["a"] + taken["b"]) == list(range(12)), taken


def test_a_peers_finished_trial_reaches_the_sampler_within_the_refresh_interval(url):
    worker = worker_study(url)
    storage: SnapshotStorage = worker._storage
    storage.refresh_seconds = 1.0
    peer = plain_study(url)
    running = peer.ask()
    running.suggest_float("x", 0.0, 1.0)
    seen = {t.number: t.state for t in worker.get_trials(deepcopy=False)}
    assert seen == {0: TrialState.RUNNING}
    peer.tell(running, 0.9)
    time.sleep(storage.refresh_seconds)
    done = worker._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False)
    assert [(t.number, t.value) for t in done] == [(0, 0.9)]


def test_what_this_worker_writes_and_ends_is_in_its_next_read(url):
    """Its own trial is current in the view at once: `--n-trials` counts the trial just ended
    (not REFRESH_SECONDS later, after starting one more), and a value it just recorded on its
    running trial is there (finalize reads its own result back before the trial ends)."""
    worker = worker_study(url)
    worker.get_trials(deepcopy=False)  # a fresh view: nothing below is due for a refresh
    worker.optimize(objective, n_trials=1)
    assert trained_trials(worker) == 1
    trial = worker.ask()
    trial.set_user_attr("test_acc", 0.9)
    trial.report(0.5, 1)
    [running] = worker.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert running.user_attrs["test_acc"] == 0.9 and running.intermediate_values == {1: 0.5}


def test_a_dead_workers_trial_is_failed_and_its_retry_taken_first(storage_url):
    """The stale-trial rule through the worker's storage, with the check done in SQL
    (storage/heartbeat.py): a trial whose heartbeat stopped is failed and re-queued, and its
    retry is the next trial taken; a trial still beating, and one that never beat, stay RUNNING."""
    create_study(make_storage(storage_url), STUDY, StudyDefinition())
    dead = make_storage(storage_url, heartbeat_interval=1, grace_period=2)
    peers = load_study(dead, STUDY)[0]
    lost, live, silent = peers.ask(), peers.ask(), peers.ask()
    lost.suggest_float("x", 0.0, 1.0)
    dead.record_heartbeat(lost._trial_id)  # a worker that beats once, then dies
    worker = worker_study(storage_url, heartbeat_interval=1, grace_period=2)
    assert [t.state for t in worker.get_trials(deepcopy=False)] == [TrialState.RUNNING] * 3
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        dead.record_heartbeat(live._trial_id)
        time.sleep(0.5)
    optuna.storages.fail_stale_trials(worker)  # as every worker does before each trial and in its watch
    retry = worker.ask()
    states = {t.number: worker._storage.get_trial(t._trial_id).state for t in (lost, live, silent)}
    assert states == {lost.number: TrialState.FAIL, live.number: TrialState.RUNNING,
                      silent.number: TrialState.RUNNING}
    queued = worker._storage.get_trial(retry._trial_id)
    assert queued.system_attrs.get("failed_trial") == lost.number and queued.params == lost.params
