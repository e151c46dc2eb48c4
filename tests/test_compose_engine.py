"""`docker compose up` on a real Docker engine: our Dockerfile built on a plain Debian base
from an offline wheelhouse, docker-compose.yml started with a CPU override
(tests/docker_local/compose.engine.yml), a search trained through it, and the faults a
host meets: a killed worker container, a restarted database, the whole stack down and up.

Needs root, Debian's docker.io and mmdebstrap (scripts/bootstrap.sh --test). The engine,
its base image and the wheelhouse are cached between runs (tests/engine.py)."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy
import torch
from optuna.trial import TrialState

from tests.conftest import rebuilt_cifar
from tests.engine import REPO, Engine, build_context, compose_binary, wheelhouse
from tests.helpers import FIXED_SPACE, load, running_checkpoint
from tests.servers import free_port, wait_until

pytestmark = pytest.mark.slow

STUDY = "engine"
# Work left when the second test looks for a running trial (3 were all done by then once CPU
# training ran channels-last); the last test raises it.
N_TRIALS = 6
EPOCHS = 8  # ~3 s an epoch on the tiny data under load: long enough to be caught mid-trial
SPACE = {"arch": FIXED_SPACE["arch"], "recipe": {**FIXED_SPACE["recipe"], "epochs": [EPOCHS, EPOCHS]}}
PROJECT = "resnet-search-engine"
SECOND_HOST = "resnet-search-engine-2"  # another compose project: a second GPU host's own volumes


class Stack:
    def __init__(self, engine: Engine, env: dict, tmp: Path):
        self.engine, self.env, self.tmp = engine, env, tmp
        self.url = (f"postgresql+psycopg2://search:{env['POSTGRES_PASSWORD']}@127.0.0.1:{env['POSTGRES_PORT']}"
                    f"/search")

    def compose(self, *args: str, check=True, timeout=600, project=PROJECT) -> subprocess.CompletedProcess:
        proc = subprocess.run([compose_binary(), "-p", project, "--project-directory", str(REPO),
                               "-f", str(REPO / "docker-compose.yml"),
                               "-f", str(REPO / "tests" / "docker_local" / "compose.engine.yml"), *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def container(self, service: str, project=PROJECT) -> dict:
        (cid,) = self.compose("ps", "-a", "-q", service, project=project).stdout.split()
        return json.loads(self.engine.docker("inspect", cid).stdout)[0]

    def volume(self, name: str, project=PROJECT) -> Path:
        return Path(self.engine.docker("volume", "inspect", "-f", "{{.Mountpoint}}", f"{project}_{name}").stdout.strip())

    def trials(self, *states):
        return load(self.url, STUDY).get_trials(deepcopy=False, states=states or None)

    def trained(self) -> int:
        try:
            return len(self.trials(TrialState.COMPLETE, TrialState.PRUNED))
        except sqlalchemy.exc.OperationalError:  # the database restarting: ask again
            return 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    engine = Engine().start()
    started = time.monotonic()
    timings: dict[str, float] = {}
    try:
        with ThreadPoolExecutor() as pool:  # both mostly wait on downloads: side by side
            wheels = pool.submit(wheelhouse)
            base = engine.base_image()
            (tmp / "context").mkdir()
            context = build_context(tmp / "context", wheels.result())
        timings["base_image_and_wheelhouse_s"] = time.monotonic() - started
        seed = tmp / "seed"  # what the data volume starts with: the tiny CIFAR-10 and the space
        shutil.copytree(rebuilt_cifar("cifar10-tiny", "--train-per-class", "20", "--test-per-class", "10"), seed)
        (seed / "space.json").write_text(json.dumps(SPACE))
        port = str(free_port())
        env = {**os.environ, "DOCKER_HOST": engine.env["DOCKER_HOST"], "BUILD_CONTEXT": str(context),
               "BASE_IMAGE": base, "POSTGRES_PASSWORD": "engine-test", "POSTGRES_PORT": port,
               "DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": port,  # as a second host's .env (README)
               "DASHBOARD_PORT": str(free_port()), "STUDY": STUDY, "N_TRIALS": str(N_TRIALS)}
        for name in ("SEARCH_STORAGE", "SEARCH_DATA_DIR", "SEARCH_ARTIFACTS"):
            env.pop(name, None)  # the compose file's, not this shell's
        s = Stack(engine, env, tmp)
        s.seed = seed
        for project in (PROJECT, SECOND_HOST):  # a clean start, whatever an earlier run left
            s.compose("down", "-v", "--remove-orphans", project=project)
        t0 = time.monotonic()
        s.compose("build")
        timings["build_s"] = time.monotonic() - t0
        timings["image_mb"] = int(engine.docker("image", "inspect", "-f", "{{.Size}}", "resnet-search:latest")
                                  .stdout) / 1e6
        s.compose("run", "--rm", "--no-deps", "-T", "-v", f"{seed}:/seed:ro", "prepare-data",
                  "sh", "-c", "cp -r /seed/. /data/")
        s.compose("up", "-d")
        s.timings = timings
        yield s
        print(f"\nengine test: {json.dumps({k: round(v, 1) for k, v in timings.items()})}, "
              f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        if "s" in locals():
            for project in (PROJECT, SECOND_HOST):
                (tmp / f"{project}.log").write_text(s.compose("logs", "--no-color", check=False, project=project).stdout)
                s.compose("down", "-v", "--remove-orphans", check=False, project=project)
        engine.docker("image", "prune", "-f", check=False)  # the images a code change replaced
        engine.stop()


def test_postgres_healthy_one_shots_complete_and_a_killed_worker_resumes_its_trial(stack):
    wait_until(lambda: stack.container("postgres")["State"].get("Health", {}).get("Status") == "healthy", 120,
               "postgres healthy")
    for one_shot in ("prepare-data", "create-study"):
        state = wait_until(lambda: (st := stack.container(one_shot)["State"])["Status"] == "exited" and st, 300,
                           f"{one_shot} to finish")
        assert state["ExitCode"] == 0, stack.compose("logs", one_shot).stdout
    assert "CIFAR-10 ready in /data/cifar-10-batches-py: 200 train, 100 test images" in stack.compose("logs", "prepare-data").stdout

    trial, ref = wait_until(lambda: running_checkpoint(stack.url, STUDY, 2), 300, "a trial with a checkpoint")
    # The worker dies as under the kernel's OOM killer: SIGKILL to its process, no chance to
    # re-queue. (Not `docker kill`: Docker counts that as a manual stop, which no restart
    # policy undoes, as the engine showed.) The restart policy brings the worker back, and the
    # trial is retried from its last checkpoint.
    os.kill(stack.container("worker")["State"]["Pid"], signal.SIGKILL)
    wait_until(lambda: stack.container("worker")["RestartCount"] >= 1, 60, "the worker restarted")

    def retry():
        return next((t for t in stack.trials(TrialState.COMPLETE)
                     if t.system_attrs.get("failed_trial") == trial.number), None)
    done = wait_until(retry, 300, "the killed trial's retry to finish")
    killed = load(stack.url, STUDY).trials[trial.number]
    assert killed.state == TrialState.FAIL
    assert done.user_attrs["resumed_from_epoch"] == killed.user_attrs["resume_checkpoint"]["epoch"] >= ref["epoch"]
    assert sorted(done.intermediate_values) == list(range(1, EPOCHS + 1))  # the whole curve, once


def test_worker_rides_out_a_postgres_restart_and_each_trial_has_its_model(stack):
    wait_until(lambda: running_checkpoint(stack.url, STUDY, 1), 300, "a trial with a checkpoint")
    restarts = stack.container("worker")["RestartCount"]
    stack.compose("restart", "postgres")
    wait_until(lambda: stack.trained() >= 2, 300, "two trained trials")
    assert stack.container("worker")["RestartCount"] == restarts  # rode it out, in the same process
    artifacts = stack.volume("artifacts")
    for t in stack.trials(TrialState.COMPLETE):
        model = artifacts / t.user_attrs["model_artifact"]
        meta = torch.load(model, weights_only=True)
        assert meta["trial"] == t.number


def test_dashboard_on_loopback_serves_a_model_file(stack):
    base = f"http://127.0.0.1:{stack.env['DASHBOARD_PORT']}"

    def studies():
        try:
            return json.loads(urllib.request.urlopen(base + "/api/studies", timeout=5).read())["study_summaries"]
        except OSError:
            return None
    (study,) = [s for s in wait_until(studies, 120, "the dashboard") if s["study_name"] == STUDY]
    trials = json.loads(urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=10).read())["trials"]
    t = next(t for t in trials if t["state"] == "Complete" and t["artifacts"])
    artifact = next(a for a in t["artifacts"] if a["filename"] == "model.pt")
    with urllib.request.urlopen(f"{base}/artifacts/{study['study_id']}/{t['trial_id']}/{artifact['artifact_id']}",
                                timeout=30) as r:
        model_file = torch.load(io.BytesIO(r.read()), weights_only=True)
    assert model_file["study"] == STUDY and model_file["trial"] == t["number"]


def test_export_best_in_a_run_container_writes_a_loadable_file(stack):
    out = stack.tmp / "out"
    out.mkdir()
    stack.compose("run", "--rm", "--no-deps", "-T", "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{out}:/out",
                  "worker", "search", "export-best", "--study", STUDY, "--out", "/out/best.pt")
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["study"] == STUDY


def test_down_and_up_keep_study_trials_and_models_and_a_second_host_helps_reach_the_target(stack):
    # A raised target (N_TRIALS in .env, then `up -d`): the worker is recreated and trains on,
    # with work left for two hosts however far the earlier tests got.
    target = stack.trained() + 4
    stack.env["N_TRIALS"] = str(target)
    stack.compose("up", "-d")
    wait_until(lambda: running_checkpoint(stack.url, STUDY, 1), 300, "a trial with a checkpoint")  # down mid-trial
    # A second GPU host, as README says: its own data volume, the first host's database.
    stack.compose("run", "--rm", "--no-deps", "-T", "-v", f"{stack.seed}:/seed:ro", "prepare-data",
                  "sh", "-c", "cp -r /seed/. /data/", project=SECOND_HOST)  # instead of a download
    stack.compose("run", "--rm", "--no-deps", "-T", "prepare-data", project=SECOND_HOST)
    before = {t.number: t.user_attrs.get("model_artifact") for t in stack.trials(TrialState.COMPLETE)}
    stack.compose("down")  # no -v: the named volumes stay
    stack.compose("up", "-d")
    stack.compose("up", "-d", "--no-deps", "worker", project=SECOND_HOST)
    # Each worker stops on its own at the target (exit 0, and the restart policy leaves it so).
    for project in (PROJECT, SECOND_HOST):
        state = wait_until(lambda: (st := stack.container("worker", project)["State"])["Status"] == "exited" and st,
                           400, f"the worker of {project} to reach the target")
        assert state["ExitCode"] == 0, stack.compose("logs", "worker", project=project).stdout[-3000:]
        assert "Traceback" not in stack.compose("logs", "worker", project=project).stdout
    study = load(stack.url, STUDY)
    after = {t.number: t.user_attrs.get("model_artifact") for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert before.items() <= after.items() and len(after) >= target
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    retried = {t.system_attrs.get("failed_trial") for t in study.trials}
    for t in study.get_trials(states=(TrialState.FAIL,)):
        assert t.number in retried, (t.number, t.user_attrs)  # each cut-off trial was queued again
    # A resume_error is allowed here: a retry that lands on the other host finds no checkpoint
    # (each host has its own volume, README) and starts over (FAILs above were re-queued). The
    # one-host resume is checked by the first test.
    # Every model is on one host's artifacts volume, and the second host trained some.
    here, there = stack.volume("artifacts"), stack.volume("artifacts", SECOND_HOST)
    assert all((here / a).is_file() or (there / a).is_file() for a in after.values())
    assert any((there / a).is_file() for a in after.values()), [(here / a).is_file() for a in after.values()]
