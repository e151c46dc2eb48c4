"""Faults on a real PostgreSQL server of this module's own (it is stopped and restarted):
outages while workers train, a quick restart under the heartbeat, commands at a prompt
while the database is away, and a study whose samples never fit its budget."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.cli import main
from core.trials import trained_trials
from tests.servers import PostgresServer, free_port, wait_until
from tests.helpers import FIXED_SPACE, SEARCH, load, running_checkpoint, search, space_file, worker

FAULT_SPACE = {"arch": FIXED_SPACE["arch"], "recipe": {**FIXED_SPACE["recipe"], "epochs": [3, 3]}}


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    yield server
    server.remove()


def logs(*paths: Path) -> str:
    return "\n".join(p.read_text() for p in paths)


def assert_nothing_lost(url: str, study_name: str, n_trials: int, artifacts: Path) -> optuna.Study:
    study = load(url, study_name)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert trained_trials(study) >= n_trials
    retried = {t.system_attrs.get("failed_trial") for t in study.trials}
    for t in study.get_trials(states=(TrialState.FAIL,)):
        # A trial cut off by the outage was queued again (and the retry carries its checkpoint).
        assert t.number in retried, (t.number, t.user_attrs)
    origins = [t.system_attrs["retry_history"][-1] for t in study.trials if "retry_history" in t.system_attrs]
    assert len(origins) == len(set(origins)), origins  # one retry per failed trial, never two
    assert not any("resume_error" in t.user_attrs for t in study.trials)
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        if "infeasible" not in t.user_attrs:
            assert (artifacts / t.user_attrs["model_artifact"]).exists()
    return study


@pytest.mark.parametrize("outage", [10, 30])
def test_workers_with_n_trials_ride_out_an_outage(pg, env, tmp_path, outage):
    url = pg.new_database()
    search("create", "--study", "outage", "--storage", url, "--space", space_file(tmp_path, FAULT_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    opts = ["--n-trials", "2", "--heartbeat", "2", "--grace", "10", "--db-wait", "90"]
    paths = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [worker(url, "outage", env, p, *opts) for p in paths]
    t0 = time.monotonic()
    wait_until(lambda: running_checkpoint(url, "outage", 1), 240, "a trial with a checkpoint")
    t1 = time.monotonic()
    pg.stop()
    time.sleep(outage)
    pg.start()
    t2 = time.monotonic()
    codes = [w.wait(timeout=400) for w in workers]
    print(f"\nfirst checkpoint after {t1 - t0:.0f} s, database back after {t2 - t1:.0f} s, "
          f"workers done {time.monotonic() - t2:.0f} s later")
    text = logs(*paths)
    assert codes == [0, 0], text
    assert "Traceback" not in text and "database error" in text, text
    study = assert_nothing_lost(url, "outage", 2, Path(env["SEARCH_ARTIFACTS"]))
    print(f"\n{outage} s outage: {len(study.trials)} trials, states "
          f"{sorted(t.state.name for t in study.trials)}")


def test_heartbeat_survives_a_quick_restart(pg):
    from optuna.storages._heartbeat import get_heartbeat_thread
    from storage.database import make_storage
    url = pg.new_database()
    storage = make_storage(url, heartbeat_interval=1, grace_period=30)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    beats = get_heartbeat_thread(trial._trial_id, storage)
    beats.start()
    engine = sqlalchemy.create_engine(url)

    def age() -> float:
        with engine.connect() as c:
            return c.execute(sqlalchemy.text("SELECT EXTRACT(EPOCH FROM now() - heartbeat) FROM trial_heartbeats "
                                             "WHERE trial_id = :t"), {"t": trial._trial_id}).scalar()
    try:
        time.sleep(1.5)
        pg.stop()
        pg.start()
        engine.dispose()
        time.sleep(3)
        assert beats._thread.is_alive()
        assert age() < 2.5  # beats go on after the restart
    finally:
        beats.join()
        engine.dispose()


def test_interactive_commands_answer_fast_while_workers_wait(pg, env, tmp_path):
    url = pg.new_database()
    search("create", "--study", "away", "--storage", url, "--space", space_file(tmp_path, FAULT_SPACE),
           "--val-size", "200", "--pruner", "none", "--epochs", "1", env=env)
    pg.stop()
    try:
        w = worker(url, "away", env, tmp_path / "w.log", "--n-trials", "1", "--heartbeat", "2", "--grace", "10")
        started = time.monotonic()
        commands = [["status"], ["report", "--out", str(tmp_path / "r")], ["enqueue", "--preset", "resnet20-he"],
                    ["export-best", "--out", str(tmp_path / "b.pt")]]
        procs = [subprocess.Popen([SEARCH, c[0], "--study", "away", "--storage", url, *c[1:]], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
        for c, p in zip(commands, procs):
            _, err = p.communicate(timeout=60)
            assert p.returncode == 1 and "did not accept connections within 3 s" in err, (c, err)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        answered = time.monotonic() - started
        assert answered < 20, answered  # all four, concurrently, on a loaded 2-core machine
        time.sleep(max(0.0, 10 - answered))
        assert w.poll() is None, (tmp_path / "w.log").read_text()  # the worker still waits
    finally:
        pg.start()
    assert w.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()
    assert_nothing_lost(url, "away", 1, Path(env["SEARCH_ARTIFACTS"]))


def test_hopeless_study_stops_with_one_line(cifar_small, tmp_path, monkeypatch, capsys):
    """Only the very smallest model of this space fits; random samples never hit it."""
    import search.worker as worker_mod
    from objectives import count_params
    from objectives.feasibility import smallest_arch
    from objectives.space import SearchSpace
    from search.definition import StudyDefinition
    space = SearchSpace.from_dict({"arch": {"num_stages": [3, 5], "blocks": [1, 4], "channels": [8, 64, 128, 256]},
                                   "recipe": {"epochs": [1, 1]}})
    definition = StudyDefinition(space=space, budget=count_params(smallest_arch(space.arch)), val_size=200,
                                 sampler="random")
    url = f"sqlite:///{tmp_path / 's.db'}"
    from search.definition import create_study
    from storage.database import make_storage
    create_study(make_storage(url), "tight", definition)  # passes: the smallest model fits
    monkeypatch.setattr(worker_mod, "HOPELESS_STREAK", 15)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = main(["worker", "--study", "tight", "--storage", url, "--gpus", "none", "--data-dir", str(cifar_small),
                     "--artifacts", str(tmp_path / "a")])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    err = capsys.readouterr().err
    assert code == 1 and "15 samples in a row over the budget" in err and len(err.strip().splitlines()) == 1
    trials = load(url, "tight").trials
    assert len(trials) == 15 and all("infeasible" in t.user_attrs for t in trials)


def test_unreachable_port_answers_within_seconds(capsys):
    url = f"postgresql+psycopg2://u@127.0.0.1:{free_port()}/db"
    started = time.monotonic()
    assert main(["status", "--study", "x", "--storage", url]) == 1
    assert time.monotonic() - started < 15
    assert "within 3 s" in capsys.readouterr().err


def test_retry_waits_through_an_outage_and_gives_up_after_db_wait(capsys):
    from storage.retry import DatabaseRetry
    from storage.database import StorageUnavailable
    down = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    calls = []

    def flaky():  # away for the first three calls, then back
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise down
        return "ok"
    assert DatabaseRetry(wait=30, label="t", delays=(0.2,)).call(flaky) == "ok" and len(calls) == 4
    assert "reachable again" in capsys.readouterr().out

    def never():
        raise down
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"unreachable for \d+ s \(--db-wait 1.5\)"):
        DatabaseRetry(wait=1.5, label="t", delays=(0.2,)).call(never)
    assert 1.5 <= time.monotonic() - started < 5

    def bug():  # not a database error: no retry
        calls.append(0)
        raise KeyError("x")
    calls.clear()
    with pytest.raises(KeyError):
        DatabaseRetry(wait=30, label="t").call(bug)
    assert calls == [0]


def test_trials_that_train_all_their_epochs_are_complete_with_many_workers(env, tmp_path):
    """A 1-epoch study under the default Hyperband: its only rung is the last epoch, where a
    pruned verdict used to turn a finished run into PRUNED (invisible to best, pareto, finalize)."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search("create", "--study", "short", "--storage", url, "--space", space_file(tmp_path, FAULT_SPACE),
           "--val-size", "200", "--epochs", "1", env=env)  # the default pruner: hyperband
    proc = search("worker", "--study", "short", "--storage", url, "--gpus", "none", "--per-gpu", "2",
                  "--n-trials", "5", "--quiet", env=env, timeout=400)
    trials = load(url, "short").trials
    states = sorted(t.state.name for t in trials)
    assert trained_trials(load(url, "short")) >= 5, proc.stdout
    assert set(states) == {"COMPLETE"}, (states, proc.stdout)
    assert all(sorted(t.intermediate_values) == [1] for t in trials)


def _running_trial(storage, study_name: str, epochs: dict[int, float], checkpoint_epoch: int | None):
    """A RUNNING trial that reported `epochs`, with a resume checkpoint after `checkpoint_epoch`."""
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
    trial = study.ask()
    for step, value in epochs.items():
        trial.report(value, step)
    if checkpoint_epoch is not None:
        trial.set_user_attr("resume_checkpoint", {"artifact_id": "x", "trial_id": trial._trial_id,
                                                  "epoch": checkpoint_epoch})
    return study, trial._trial_id


def test_requeue_is_once_across_processes(storage_url):
    """Eight processes recover one trial cut off by an outage at the same moment (its worker,
    the peers' stale-trial watches): the trial gets exactly one retry, under PostgreSQL's
    advisory lock and under SQLite's lock file alike."""
    import multiprocessing
    url = storage_url
    from storage.database import make_storage
    study, trial_id = _running_trial(make_storage(url), "race", {1: 0.3, 2: 0.4}, checkpoint_epoch=2)
    ctx = multiprocessing.get_context("fork")  # each child opens its own storage
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_recover_in_process, args=(url, "race", trial_id, barrier, results)) for _ in range(8)]
    for p in procs:
        p.start()
    numbers = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    trials = load(url, "race").trials
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1, ([t.system_attrs for t in trials], numbers)
    assert retries[0].intermediate_values == {1: 0.3, 2: 0.4}  # what its checkpoint covers


def test_a_requeue_whose_commit_answer_was_lost_is_not_repeated(pg):
    """A commit whose answer was lost: the retry is stored, then the connection drops; the
    worker's database retry calls the recovery again, and finds the retry made."""
    from storage.database import make_storage
    url = pg.new_database()
    study, trial_id = _running_trial(make_storage(url), "lost-answer", {1: 0.5}, checkpoint_epoch=1)
    storage = make_storage(url)
    real_create = storage.create_new_trial
    calls = []

    def create_then_lose_answer(*args, **kwargs):
        result = real_create(*args, **kwargs)  # committed
        calls.append(result)
        if len(calls) == 1:
            pg.restart()  # the server goes away before the answer is read
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return result
    storage.create_new_trial = create_then_lose_answer
    from storage.retry import DatabaseRetry
    from search.recovery import recover_interrupted
    study = optuna.load_study(study_name="lost-answer", storage=storage)
    DatabaseRetry(wait=60, label="t", delays=(0.5,)).call(recover_interrupted, study, storage, trial_id)
    retries = [t for t in load(url, "lost-answer").trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1, retries


def _recover_in_process(url, study_name, trial_id, barrier, results):
    from search.recovery import recover_interrupted
    from storage.database import make_storage
    storage = make_storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    barrier.wait()
    try:
        results.put(recover_interrupted(study, storage, trial_id))
    except Exception as e:
        results.put(repr(e))


def test_a_retry_that_starts_over_starts_with_an_empty_curve_and_status_says_what_was_requeued(storage_url):
    from search.status import summarize
    from search.recovery import recover_interrupted
    from storage.database import make_storage
    url = storage_url
    storage = make_storage(url)
    study, no_checkpoint = _running_trial(storage, "curve", {1: 0.6, 2: 0.7}, checkpoint_epoch=None)
    _, checkpoint_after_1 = _running_trial(storage, "curve", {1: 0.5, 2: 0.55}, checkpoint_epoch=1)
    _, lost = _running_trial(storage, "curve", {1: 0.2}, checkpoint_epoch=None)
    study = optuna.load_study(study_name="curve", storage=storage)
    for trial_id in (no_checkpoint, checkpoint_after_1):
        recover_interrupted(study, storage, trial_id)
    storage.set_trial_state_values(lost, state=TrialState.FAIL)  # failed, its re-queue never came
    by_origin = {t.system_attrs.get("failed_trial"): t for t in load(url, "curve").trials}
    assert by_origin[0].intermediate_values == {}  # starts over: nothing to judge it by but itself
    assert by_origin[1].intermediate_values == {1: 0.5}  # resumes after epoch 1
    reasons = {f["trial"]: f["reason"] for f in summarize(load(url, "curve"))["recent_failures"]}
    assert reasons[0].endswith(f"re-queued as trial {by_origin[0].number}"), reasons
    assert reasons[2] == "worker lost (heartbeat stale); not re-queued", reasons


def _log_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


def test_worker_rides_out_the_s3_server_killed_and_restarted(pg, env, tmp_path):
    from tests.fleet_servers import S3Server
    s3 = S3Server().start()
    try:
        s3.client().create_bucket(Bucket="ckpts")
        s3_env = {**{k: v for k, v in env.items() if k != "SEARCH_ARTIFACTS"}, **s3.env}
        url = pg.new_database()
        search("create", "--study", "s3down", "--storage", url, "--space", space_file(tmp_path, FAULT_SPACE),
               "--val-size", "200", "--pruner", "none", "--artifacts", "s3://ckpts/run", env=s3_env)
        log = tmp_path / "w.log"
        w = worker(url, "s3down", s3_env, log, "--n-trials", "1", "--heartbeat", "2", "--grace", "10")
        wait_until(lambda: running_checkpoint(url, "s3down", 1), 240, "a checkpoint in S3")
        s3.proc.kill()  # the endpoint is gone: connections refused
        s3.proc.wait()
        wait_until(lambda: _log_has(log, "artifact store error"), 120, "the worker to meet the outage")
        time.sleep(5)
        s3.start("ckpts")  # moto keeps nothing: its bucket is made again as soon as it answers
        assert w.wait(timeout=300) == 0, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text and "artifact store reachable again" in text, text
        (trial,) = load(url, "s3down").trials
        assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 2, 3]
        assert s3.keys("ckpts", "run/") == [f"run/{trial.user_attrs['model_artifact']}"]
    finally:
        s3.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs for the artifacts, filled up on demand."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_ridden_out_then_past_store_wait_the_trial_is_requeued_and_the_worker_exits_75(
        pg, env, tmp_path, small_disk):
    url = pg.new_database()
    store = small_disk / "artifacts"
    disk_env = dict(env, SEARCH_ARTIFACTS=str(store))
    search("create", "--study", "full", "--storage", url, "--space", space_file(tmp_path, FAULT_SPACE),
           "--val-size", "200", "--pruner", "none", env=disk_env)
    out, err = tmp_path / "w.log", tmp_path / "w.err"
    w = subprocess.Popen([SEARCH, "worker", "--study", "full", "--storage", url, "--gpus", "none", "--n-trials", "1",
                          "--heartbeat", "2", "--grace", "10", "--store-wait", "8"], env=disk_env,
                         stdout=out.open("w"), stderr=err.open("w"))
    wait_until(lambda: running_checkpoint(url, "full", 1), 240, "the epoch-1 checkpoint")
    filler = _fill(small_disk)  # full before the epoch-2 checkpoint
    wait_until(lambda: _log_has(out, "No space left on device"), 120, "the worker to meet the full disk")
    filler.unlink()  # an operator frees space within --store-wait: the trial goes on
    wait_until(lambda: running_checkpoint(url, "full", 2), 120, "the epoch-2 checkpoint after space was freed")
    _fill(small_disk)  # full again, and stays full: the model upload after epoch 3 cannot be written
    assert w.wait(timeout=120) == 75, out.read_text() + err.read_text()
    text, (line,) = out.read_text(), err.read_text().strip().splitlines()
    assert "Traceback" not in text + line
    assert "artifact store was unreachable for" in line and "No space left on device" in line, line
    assert "trial 0" in line and str(store) in line, line  # the trial and the path
    assert "trial 0: cut off by the artifact store, re-queued to resume" in text, text
    assert not [p.name for p in store.iterdir() if "partial" in p.name]  # no truncated file left
    trials = load(url, "full").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    failed, retry = trials
    assert "No space left on device" in failed.user_attrs["fail_reason"]
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["resume_checkpoint"]["epoch"] == 2
    assert (store / retry.user_attrs["resume_checkpoint"]["artifact_id"]).stat().st_size > 0


def test_outage_past_db_wait_exits_75_and_the_next_worker_requeues_each_trial_once(pg, env, tmp_path):
    url = pg.new_database()
    search("create", "--study", "long", "--storage", url, "--space", space_file(tmp_path, FAULT_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    opts = ["--gpus", "none", "--n-trials", "2", "--heartbeat", "2", "--grace", "6", "--db-wait", "5"]
    errs = [tmp_path / f"w{i}.err" for i in range(2)]
    workers = [subprocess.Popen([SEARCH, "worker", "--study", "long", "--storage", url, *opts], env=env,
                                stdout=(tmp_path / f"w{i}.log").open("w"), stderr=errs[i].open("w")) for i in range(2)]
    wait_until(lambda: running_checkpoint(url, "long", 1), 240, "a trial with a checkpoint")
    pg.stop()
    try:
        codes = [w.wait(timeout=180) for w in workers]
    finally:
        pg.start()
    for code, err in zip(codes, errs):
        assert code == 75, err.read_text()  # EX_TEMPFAIL: transient, run me again
        lines = err.read_text().strip().splitlines()  # skipped heartbeats, then the one error line
        (line,) = [l for l in lines if l.startswith("search worker: error:")]
        assert line == lines[-1] and "Traceback" not in err.read_text()
        assert "the database was unreachable for" in line and "--db-wait 5" in line, line
    # A worker started once the database is back (a scheduler's requeue on 75) recovers the
    # trials left RUNNING by the stale-trial rule: each gets one retry, which resumes.
    search("worker", "--study", "long", "--storage", url, *opts[:-2], "--db-wait", "60", env=env, timeout=400)
    study = assert_nothing_lost(url, "long", 2, Path(env["SEARCH_ARTIFACTS"]))
    origins = [t.system_attrs["retry_history"][-1] for t in study.trials if "retry_history" in t.system_attrs]
    assert origins and len(origins) == len(set(origins)), origins


def test_a_trial_ended_by_another_process_is_dropped_and_the_worker_carries_on(pg, env, tmp_path):
    """The race of the stale-trial watch with the trial's own worker, after a database restart:
    the watch failed the trial (and its re-queue was cut off); the worker must not die on its tell."""
    url = pg.new_database()
    search("create", "--study", "race", "--storage", url, "--space", space_file(tmp_path, FAULT_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    log = tmp_path / "w.log"
    w = worker(url, "race", env, log, "--n-trials", "1", "--heartbeat", "2", "--grace", "60")
    trial, _ = wait_until(lambda: running_checkpoint(url, "race", 1), 240, "a trial with a checkpoint")
    from storage.database import make_storage
    make_storage(url).set_trial_state_values(trial._trial_id, state=TrialState.FAIL)  # as the watch does
    assert w.wait(timeout=300) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and "trial 0 was already ended by another worker (FAIL)" in text, text
    study = load(url, "race")
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs.get("resumed_from_epoch", 0) >= 1
    assert "not re-queued" not in (study.trials[0].user_attrs.get("fail_reason") or "")
