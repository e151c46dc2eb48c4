"""The search service end to end, with real processes on real storage (SQLite and PostgreSQL):
create, parallel workers with pruning, status, export, the optuna CLI, and faults."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers import (BIN, FIXED_SPACE, VARIED_SPACE, load, one_line_error, running_checkpoint, search, space_file,
                           worker)
from tests.servers import wait_until


def test_two_workers_prune_export_and_optuna_cli(storage_url, env, tmp_path):
    search("create", "--study", "e2e", "--storage", storage_url, "--space", space_file(tmp_path, VARIED_SPACE),
           "--val-size", "200", "--budget", "30000", "--pruner", "median", env=env)
    # Same definition again: a no-op; another definition: a clear error.
    search("create", "--study", "e2e", "--storage", storage_url, "--space", space_file(tmp_path, VARIED_SPACE),
           "--val-size", "200", "--budget", "30000", "--pruner", "median", env=env)
    clash = search("create", "--study", "e2e", "--storage", storage_url, "--budget", "40000", env=env, check=False)
    assert clash.returncode == 1 and "different definition" in clash.stderr and "Traceback" not in clash.stderr

    workers = [worker(storage_url, "e2e", env, tmp_path / f"w{i}.log", "--n-trials", "10") for i in range(2)]
    codes = [w.wait(timeout=600) for w in workers]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    import re
    assert all(re.search(r"^\[e2e\] trial \d+: ", log, re.M) for log in logs), logs  # both workers ran trials

    study = load(storage_url, "e2e")
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and "infeasible" not in t.user_attrs]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    infeasible = [t for t in trials if "infeasible" in t.user_attrs]
    assert feasible and pruned and len(feasible) + len(pruned) >= 10
    for t in infeasible:  # never built, never trained
        assert t.user_attrs["params"] > 30_000 and t.constraints["params_over_budget"] > 0
        assert not t.intermediate_values and "curve" not in t.user_attrs and "model_artifact" not in t.user_attrs
    for t in feasible:
        assert len(t.intermediate_values) == 3 and len(t.user_attrs["curve"]) == 3
        assert t.user_attrs["model_artifact"] and t.user_attrs["params"] <= 30_000 and t.constraints["params_over_budget"] <= 0
    best = max(feasible, key=lambda t: t.value)

    status = json.loads(search("status", "--study", "e2e", "--storage", storage_url, "--json", env=env).stdout)
    assert status["counts"]["complete"] == len(feasible) and status["counts"]["pruned"] == len(pruned)
    assert status["counts"]["infeasible"] == len(infeasible) and status["best"]["trial"] == best.number
    assert "best (by best validation accuracy): trial" in search("status", "--study", "e2e", "--storage", storage_url, env=env).stdout

    out = tmp_path / "best.pt"
    search("export-best", "--study", "e2e", "--storage", storage_url, "--out", str(out), env=env)
    check = textwrap.dedent(f"""
        import torch
        data = torch.load({str(out)!r}, weights_only=True)
        from objectives.data import load_cifar10
        from objectives.inference import evaluate, load_classifier
        from objectives.prepare import prepare_data
        model, info = load_classifier(data)
        split = prepare_data(load_cifar10(), info["data"]["val_size"], info["data"]["seed"], info["data"]["train_limit"])
        acc = evaluate(model, split.val, tta=info["recipe"]["tta_flip"]).accuracy
        print(repr(acc), info["trial"], info["study"])
    """)
    fresh = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120, check=True)
    acc, trial_number, study_name = fresh.stdout.split()
    assert float(acc) == best.value and int(trial_number) == best.number and study_name == "e2e"

    # Plain Optuna reads our study.
    optuna_cli = str(BIN / "optuna")
    listed = subprocess.run([optuna_cli, "studies", "--storage", storage_url], capture_output=True, text=True, check=True)
    assert "e2e" in listed.stdout
    best_cli = subprocess.run([optuna_cli, "best-trial", "--study-name", "e2e", "--storage", storage_url, "-f", "json"],
                              capture_output=True, text=True, check=True)
    assert json.loads(best_cli.stdout)["number"] == best.number


def test_killed_worker_trial_is_retried_and_resumed(postgres, env, tmp_path):
    url = postgres.new_database()
    search("create", "--study", "kill", "--storage", url, "--space", space_file(tmp_path, FIXED_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    hb = ["--heartbeat", "1", "--grace", "3"]
    victim = worker(url, "kill", env, tmp_path / "victim.log", "--n-trials", "3", *hb)
    survivor = worker(url, "kill", env, tmp_path / "survivor.log", "--n-trials", "3", *hb)
    trial, ref = wait_until(lambda: running_checkpoint(url, "kill", 2, owner_pid=victim.pid), 240,
                          "a victim's trial with an epoch-2 checkpoint")
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    assert survivor.wait(timeout=600) == 0, (tmp_path / "survivor.log").read_text()

    study = load(url, "kill")
    killed = study.trials[trial.number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_epoch"] >= ref["epoch"] >= 2  # resumed, not started over
    assert sorted(retry.intermediate_values) == list(range(1, 7))
    failed_after = killed.datetime_complete.timestamp() - killed_at
    retried_after = retry.datetime_start.timestamp() - killed_at
    print(f"\nkilled trial {trial.number}: FAIL {failed_after:.1f} s after the kill (grace 3 s, heartbeat 1 s), "
          f"retry trial {retry.number} started after {retried_after:.1f} s, resuming after epoch "
          f"{retry.user_attrs['resumed_from_epoch']}")
    assert failed_after < 3 + 1 + 2  # grace + one watchdog period + slack
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 3 and all(t.user_attrs.get("model_artifact") for t in complete)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    artifacts = Path(env["SEARCH_ARTIFACTS"])
    assert all((artifacts / t.user_attrs["model_artifact"]).exists() for t in complete)


def test_sigterm_stops_cleanly_and_requeues_the_trial(env, tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search("create", "--study", "term", "--storage", url, "--space", space_file(tmp_path, FIXED_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    w = worker(url, "term", env, tmp_path / "w.log", "--n-trials", "1")
    trial, ref = wait_until(lambda: running_checkpoint(url, "term", 1), 240, "a trial with a checkpoint")
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "w.log").read_text()  # "interrupted", not "done"
    study = load(url, "term")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.trials[trial.number].state == TrialState.FAIL
    assert "worker stopped" in study.trials[trial.number].user_attrs["fail_reason"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["failed_trial"] for t in waiting] == [trial.number]
    # The next worker picks it up and resumes from the checkpoint.
    search("worker", "--study", "term", "--storage", url, "--gpus", "none", "--n-trials", "1", env=env)
    resumed = load(url, "term").trials[waiting[0].number]
    assert resumed.state == TrialState.COMPLETE and resumed.user_attrs["resumed_from_epoch"] >= ref["epoch"]
    assert not resumed.user_attrs.get("fail_reason")


def test_worker_survives_a_database_restart(postgres, env, tmp_path):
    url = postgres.new_database()
    search("create", "--study", "restart", "--storage", url, "--space", space_file(tmp_path, FIXED_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    w = worker(url, "restart", env, tmp_path / "w.log", "--n-trials", "2", "--heartbeat", "1", "--grace", "3")
    wait_until(lambda: running_checkpoint(url, "restart", 1), 240, "a running trial")
    postgres.restart()
    assert w.wait(timeout=600) == 0, (tmp_path / "w.log").read_text()
    study = load(url, "restart")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 2 and not study.get_trials(states=(TrialState.RUNNING,))


@pytest.mark.parametrize("args, message", [
    (["status", "--study", "nope"], "no such database file"),  # a read never creates the file
    (["export-best", "--study", "nope", "--out", "x.pt"], "no such database file"),
    (["status", "--study", "x", "--storage", "foo://bar"], "bad storage URL"),
    (["status", "--study", "x", "--storage", "postgresql+psycopg2://u:secret@127.0.0.1:1/db", "--db-wait", "1"],
     "did not accept connections within 1 s"),
    (["worker", "--study", "nope", "--gpus", "none"], "no such database file"),
])
def test_clear_errors(env, tmp_path, args, message):
    env = dict(env, SEARCH_STORAGE=f"sqlite:///{tmp_path / 'search.db'}")
    proc = search(*args, env=env, check=False)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert "secret" not in proc.stderr  # passwords never echoed
    assert len(proc.stderr.strip().splitlines()) == 1


def test_wrong_database_fails_at_once_not_after_the_wait(postgres, env):
    url = postgres.url.rsplit("/", 1)[0] + "/nosuchdb"
    started = time.monotonic()
    line = one_line_error(search("status", "--study", "x", "--storage", url, "--db-wait", "60", env=env, check=False))
    assert 'database "nosuchdb" does not exist' in line and time.monotonic() - started < 30


def test_empty_study_export_and_enqueue(env, tmp_path):
    env = dict(env, SEARCH_STORAGE=f"sqlite:///{tmp_path / 'search.db'}")
    search("create", "--study", "empty", env=env)
    proc = search("export-best", "--study", "empty", "--out", str(tmp_path / "x.pt"), env=env, check=False)
    assert proc.returncode == 1 and "no completed trial" in proc.stderr
    search("enqueue", "--study", "empty", "--preset", "resnet24-steroids", env=env)
    over = search("enqueue", "--study", "empty", "--preset", "resnet18-kuangliu", env=env, check=False)
    assert over.returncode == 1 and "11,173,962" in over.stderr
    waiting = load(env["SEARCH_STORAGE"], "empty").get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"]["stage4_channels"] == 256


def test_per_gpu_slots_are_processes_and_stop_together(env, tmp_path):
    """`--per-gpu 2` on a machine without GPUs: two CPU worker processes under one parent;
    SIGTERM to the parent stops both cleanly and re-queues both trials in flight."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search("create", "--study", "slots", "--storage", url, "--space", space_file(tmp_path, FIXED_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    parent = worker(url, "slots", env, tmp_path / "w.log", "--per-gpu", "2")

    def two_running():
        running = [t for t in load(url, "slots").get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("resume_checkpoint")]
        return running if len({t.user_attrs["worker"]["pid"] for t in running}) == 2 else None
    running = wait_until(two_running, 240, "two trials running in two slot processes")
    assert parent.pid not in {t.user_attrs["worker"]["pid"] for t in running}  # children do the work
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "w.log").read_text()
    study = load(url, "slots")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    requeued = {t.system_attrs["failed_trial"] for t in study.get_trials(states=(TrialState.WAITING,))}
    assert requeued == {t.number for t in running}
