"""The docker-compose topology, run for real as processes (no Docker engine here): a real
PostgreSQL on loopback, the init steps, two workers and optuna-dashboard on the same
database and artifact directory; checked through the dashboard's HTTP API and in a real
headless Chromium."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageStat

from tests.servers import free_port
from tests.helpers import VARIED_SPACE, search, space_file
BIN = Path(sys.executable).parent


def get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(url, 2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def dashboard_proc():
    procs = []
    yield procs
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def test_compose_topology_as_processes(postgres, cifar_small, tmp_path, dashboard_proc):
    url = postgres.new_database()
    artifacts = tmp_path / "artifacts"
    env = dict(__import__("os").environ, SEARCH_STORAGE=url, SEARCH_DATA_DIR=str(cifar_small),
               SEARCH_ARTIFACTS=str(artifacts), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # The init services, in compose's order.
    assert "1,000 train, 200 test images" in search("prepare-data", env=env).stdout  # the small rebuilt set, validated
    search("create", "--study", "deploy", "--space", space_file(tmp_path, VARIED_SPACE), "--val-size", "200",
           "--budget", "30000", "--pruner", "median", env=env)
    # Two workers as the compose worker runs them (`--gpus all` falls back to the CPU here).
    workers = [subprocess.Popen([str(BIN / "search"), "worker", "--study", "deploy", "--gpus", "all", "--per-gpu", "1",
                                 "--n-trials", "5", "--heartbeat", "5", "--grace", "15"], env=env,
                                stdout=(tmp_path / f"w{i}.log").open("w"), stderr=subprocess.STDOUT) for i in range(2)]
    port = free_port()
    dashboard_proc.append(subprocess.Popen(
        [str(BIN / "optuna-dashboard"), "--host", "127.0.0.1", "--port", str(port), "--artifact-dir", str(artifacts), url],
        stdout=(tmp_path / "dashboard.log").open("w"), stderr=subprocess.STDOUT))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/api/studies", 60)  # GET / answers 302; the API says when it is up
    assert [w.wait(timeout=600) for w in workers] == [0, 0], [(tmp_path / f"w{i}.log").read_text() for i in range(2)]

    studies = json.loads(get(base + "/api/studies")[1])["study_summaries"]
    (study,) = [s for s in studies if s["study_name"] == "deploy"]
    detail = json.loads(get(f"{base}/api/studies/{study['study_id']}")[1])
    trials = detail["trials"]
    assert len(trials) >= 5
    assert any(len(t["intermediate_values"]) >= 2 for t in trials)
    with_artifacts = [t for t in trials if t["artifacts"]]
    assert with_artifacts, "no checkpoint artifact visible in the dashboard"
    t = with_artifacts[0]
    (artifact,) = t["artifacts"]
    assert artifact["filename"] == "model.pt"
    # The dashboard serves the checkpoint itself, and it is our model file.
    status, body = get(f"{base}/artifacts/{study['study_id']}/{t['trial_id']}/{artifact['artifact_id']}")
    model_file = torch.load(io.BytesIO(body), weights_only=True)
    assert status == 200 and model_file["study"] == "deploy" and model_file["trial"] == t["number"]

    # The study page, rendered by a real browser.
    shot = tmp_path / "study.png"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/bootstrap.sh --test installs it)"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
                    "--virtual-time-budget=10000", "--window-size=1280,900", f"--screenshot={shot}",
                    f"{base}/dashboard/studies/{study['study_id']}"],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 900)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the study page rendered blank"
    assert max(ImageStat.Stat(image).stddev) > 10
    shutil.copy(shot, Path(__file__).resolve().parent / ".cache" / "dashboard-study.png")  # to look at after a run
