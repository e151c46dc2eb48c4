"""Checkpoints in S3: workers on hosts with no shared disk (each its own scratch directory),
a real S3-compatible server (moto in server mode) on loopback, PostgreSQL for the study."""
from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

import pytest
from optuna.trial import TrialState

from tests.fleet_servers import S3Server
from tests.servers import free_port, wait_until
from tests.helpers import FIXED_SPACE, SEARCH, load, running_checkpoint, search
BUCKET, PREFIX = "ckpts", "team/exp1"


@pytest.fixture(scope="module")
def s3():
    server = S3Server().start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3_env(env, s3):
    """The tests' environment with the artifacts in S3 only where the study says so (no $SEARCH_ARTIFACTS)."""
    return {**{k: v for k, v in env.items() if k != "SEARCH_ARTIFACTS"}, **s3.env}


def test_retry_on_another_host_resumes_from_s3_and_readers_need_no_flag(postgres, s3, s3_env, tmp_path):
    url = postgres.new_database()
    space = dict(FIXED_SPACE, recipe=dict(FIXED_SPACE["recipe"], epochs=[4, 4]))
    (tmp_path / "space.json").write_text(json.dumps(space))
    location = f"s3://{BUCKET}/{PREFIX}"
    search("create", "--study", "s3", "--storage", url, "--space", str(tmp_path / "space.json"), "--val-size", "200",
           "--pruner", "none", "--artifacts", location, env=s3_env)
    assert load(url, "s3").user_attrs["artifacts"] == location  # the study remembers

    hosts = [tmp_path / name for name in ("host1", "host2", "host3")]
    for h in hosts:
        h.mkdir()

    def worker(host, log):  # no --artifacts: the location comes from the study
        return subprocess.Popen([SEARCH, "worker", "--study", "s3", "--storage", url, "--gpus", "none", "--n-trials", "1",
                                 "--heartbeat", "1", "--grace", "3"], cwd=host, env=s3_env,
                                stdout=(tmp_path / log).open("w"), stderr=subprocess.STDOUT)

    first = worker(hosts[0], "w1.log")
    trial, ref = wait_until(lambda: running_checkpoint(url, "s3", 1, owner_pid=first.pid), 240,
                          "a checkpoint in S3 after epoch 1")
    assert f"{PREFIX}/{ref['artifact_id']}" in s3.keys(BUCKET, PREFIX)
    first.send_signal(signal.SIGKILL)  # the host dies: its scratch directory is gone with it
    killed_at = time.time()
    first.wait()
    time.sleep(4)  # past the 3 s grace: the next worker fails and re-queues the trial before its first ask

    second = worker(hosts[1], "w2.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "w2.log").read_text()
    study = load(url, "s3")
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert retry.state == TrialState.COMPLETE and "resume_error" not in retry.user_attrs
    resumed = retry.user_attrs["resumed_from_epoch"]
    assert resumed >= ref["epoch"] >= 1 and sorted(retry.intermediate_values) == [1, 2, 3, 4]
    print(f"\nS3 drill: trial {trial.number} killed after its epoch-{ref['epoch']} checkpoint; retry trial "
          f"{retry.number} started {retry.datetime_start.timestamp() - killed_at:.1f} s later on another host, "
          f"resumed after epoch {resumed}")
    # The superseded checkpoint of the failed attempt is gone; only the model is left.
    assert s3.keys(BUCKET, PREFIX) == [f"{PREFIX}/{retry.user_attrs['model_artifact']}"]
    assert not any((h / "artifacts").exists() for h in hosts)  # nothing written to local disks
    # So are its artifact rows, on the failed attempt and on the retry that copied them: each row
    # left (what optuna-dashboard lists) names an object in the bucket, and none is a null.
    rows = {k[len("artifacts:"):]: json.loads(v) for t in study.trials for k, v in t.system_attrs.items()
            if k.startswith("artifacts:")}
    assert None not in rows.values() and {f"{PREFIX}/{a}" for a in rows} == set(s3.keys(BUCKET, PREFIX)), rows

    # A third host, no flag, no shared disk: export and report find the model through the study.
    export = search("export-best", "--study", "s3", "--storage", url, "--out", str(hosts[2] / "best.pt"), env=s3_env)
    assert f"trial {retry.number}" in export.stdout and (hosts[2] / "best.pt").stat().st_size > 0
    search("report", "--study", "s3", "--storage", url, "--out", str(hosts[2] / "report"), env=s3_env)
    summary = (hosts[2] / "report" / "summary.md").read_text()
    assert f"in {location}: present" in summary

    # The dashboard on the third host serves the model from S3 (location remembered by the study).
    port = free_port()
    dash = subprocess.Popen([SEARCH, "dashboard", "--storage", url, "--port", str(port)],  # every study
                            cwd=hosts[2], env=s3_env, stdout=(tmp_path / "dash.log").open("w"), stderr=subprocess.STDOUT)
    try:
        body = wait_until(lambda: _get(f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{retry._trial_id}/"
                                     f"{retry.user_attrs['model_artifact']}"), 60, "the dashboard")
        assert body == s3.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{retry.user_attrs['model_artifact']}")["Body"].read()
    finally:
        dash.terminate()
        dash.wait(timeout=10)

    # A flag still wins over the remembered location: an empty directory has no model.
    (hosts[2] / "elsewhere").mkdir()
    wrong = search("export-best", "--study", "s3", "--storage", url, "--out", str(hosts[2] / "x.pt"),
                   "--artifacts", str(hosts[2] / "elsewhere"), env=s3_env, check=False)
    assert wrong.returncode == 1 and "missing from the artifact store" in wrong.stderr and "Traceback" not in wrong.stderr


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return None


def test_unreachable_bucket_is_one_line_error(s3_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    proc = search("create", "--study", "x", "--storage", url, "--artifacts", "s3://no-such-bucket/p", env=s3_env,
                  check=False)
    assert proc.returncode == 1 and "s3://no-such-bucket/p is not reachable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
