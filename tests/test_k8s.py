"""deploy/k8s: the kustomizations render, every object validates against the Kubernetes
schema (kubernetes-validate, offline), every `search` command line in them parses with our
CLI, and the structure users rely on holds (work-queue workers on one GPU each, re-queue on
TERM, dashboard reachable only through the cluster, credentials from Secrets).

No kustomize binary installs from PyPI or Debian, so `render` below builds the output itself
from the subset of kustomize the files use (resources, images) and refuses any other key."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from search.cli import build_parser
from storage import dashboard

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "images"}


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    assert not unknown, f"{directory}: kustomization keys this test cannot render: {unknown}"
    objects: list[dict] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        objects += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for image in kustomization.get("images", []):
        for c in containers(objects):
            if c["image"].split(":")[0] == image["name"]:
                c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def containers(objects: list[dict]):
    for o in objects:
        spec = o.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        yield from pod.get("initContainers", []) + pod.get("containers", [])


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, (kind, name)
    return found


@pytest.fixture(scope="module", params=["base", "with-postgres"])
def objects(request) -> list[dict]:
    return render(K8S / request.param)


def test_every_object_validates_against_the_kubernetes_schema(objects):
    version = kubernetes_validate.latest_version()
    for o in objects:
        kubernetes_validate.validate(o, version, strict=True)  # raises on any invalid or unknown field


@pytest.mark.parametrize("break_it", [
    lambda o: o["spec"].update(parallelism="four"),
    lambda o: o["spec"]["template"]["spec"].update(terminationGracePeriod=120),  # a misspelt field
    lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("name"),  # required
])
def test_the_validator_rejects_a_broken_worker_job(break_it):
    job = copy.deepcopy(by_kind(render(K8S / "base"), "Job", "resnet-search-workers")[0])
    break_it(job)
    with pytest.raises((kubernetes_validate.ValidationError, kubernetes_validate.utils.InvalidSchemaError)):
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


def configmap(objects) -> dict[str, str]:
    return by_kind(objects, "ConfigMap", "resnet-search")[0]["data"]


def test_every_search_command_line_parses(objects):
    values = configmap(objects)
    commands = []
    for c in containers(objects):
        command = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in c.get("command", [])]
        if command[:1] == ["search"]:
            build_parser().parse_args(command[1:])  # the exact line, as Kubernetes expands it
            commands.append(command[1])
        elif command[:3] == ["python", "-m", "storage.dashboard"]:
            dashboard.build_parser().parse_args(command[3:])
            commands.append("dashboard")
    assert sorted(commands) == ["create", "dashboard", "prepare-data", "worker"]


def test_workers_are_a_work_queue_of_one_gpu_pods_that_requeue_on_term(objects):
    job = by_kind(objects, "Job", "resnet-search-workers")[0]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["parallelism"] >= 1 and "completions" not in spec  # work queue: pods stop when the study is done
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["command"][:2] == ["search", "worker"] and "--n-trials" in worker["command"]
    assert pod["terminationGracePeriodSeconds"] >= 60 and pod["restartPolicy"] == "Never"
    ignored = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "Ignore" and "onExitCodes" in r]
    assert 143 in ignored[0]["onExitCodes"]["values"]  # what a TERM'd worker exits with (tests/test_service.py)


def test_credentials_come_from_secrets_and_nothing_is_exposed(objects):
    assert not [o for o in objects if o["kind"] in ("Secret", "Ingress")]  # no credentials in git, no way in
    for o in objects:
        if o["kind"] == "Service":
            assert o["spec"]["type"] == "ClusterIP"
    for c in containers(objects):
        if c["name"] in ("worker", "create-study", "dashboard"):
            env = {e["name"]: e for e in c["env"]}
            assert env["SEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "resnet-search-db"
            assert {"secretRef": {"name": "resnet-search-s3", "optional": True}} in c["envFrom"]
    assert configmap(objects)["SEARCH_ARTIFACTS"].startswith("s3://")


def test_images_are_set_in_one_place():
    objects = render(K8S / "with-postgres")
    ours = {c["image"] for c in containers(objects) if c["name"] != "postgres"}
    assert ours == {"registry.example.com/resnet-search:0.1.0"}
    assert by_kind(objects, "StatefulSet", "resnet-search-postgres")[0]["spec"]["template"]["spec"]["containers"][0][
        "image"] == "postgres:16"
