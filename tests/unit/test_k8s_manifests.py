"""deploy/k8s rendered (`kubectl kustomize`, every overlay) and checked: every object validates
against the Kubernetes schemas (kubernetes-validate, strict), and the cluster gets what the
cloud tier needs to scale: Triton in explicit model-control mode on a writable repository, an
autoscaler on queue time per request, disruption budgets, probes, resources, network policy."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgecascade.cloud.triton.server import ADMIN_KEY_NAME
from tests.kustomize import OVERLAYS, Manifest, find, rendered

K8S_VERSION = "1.32.0"  # the schemas checked against (Debian's kubectl is 1.32)
WORKLOADS = ("Deployment", "StatefulSet")
QUEUE_METRIC = "nv_inference_queue_duration_us"
REQUESTS_METRIC = "nv_inference_request_success"


def problems(doc: Manifest) -> str | None:
    """kubernetes-validate's complaint about `doc`, None when it is valid."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{doc['kind']} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}"
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_strictly(overlay: str) -> None:
    docs = rendered(overlay)
    assert {d["kind"] for d in docs} >= {
        "StatefulSet",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "ConfigMap",
    }
    found = [p for p in map(problems, docs) if p]
    assert not found, "\n".join(found)


def test_a_manifest_that_does_not_validate_is_caught() -> None:
    deployment = find(rendered(OVERLAYS[0]), "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for bad, words in ((typo, "readinesProbe"), (wrong_type, "'two'")):
        message = problems(bad)
        assert message is not None and words in message, message


def workloads(overlay: str) -> list[Manifest]:
    return [d for d in rendered(overlay) if d["kind"] in WORKLOADS]


def containers(workload: Manifest) -> list[Manifest]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits_and_three_probes(overlay: str) -> None:
    for workload in workloads(overlay):
        for c in containers(workload):
            where = f"{overlay} {workload['metadata']['name']}/{c['name']}"
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{where}: no {probe}"
    (triton,) = containers(find(rendered(overlay), "StatefulSet"))
    gpu = triton["resources"]
    assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_has_a_tag(overlay: str) -> None:
    for workload in workloads(overlay):
        for c in containers(workload):
            name, _, tag = c["image"].rpartition(":")
            assert name and "/" not in tag and tag not in ("", "latest"), c["image"]


def test_production_pins_the_images_and_the_edges_network() -> None:
    gateway = containers(find(rendered("production"), "Deployment"))[0]
    assert gateway["image"] == "registry.example.com/edgecascade-gateway:0.1.0"
    triton = containers(find(rendered("production"), "StatefulSet"))[0]
    assert triton["image"] == "registry.example.com/edgecascade-triton:0.1.0"
    policy = find(rendered("production"), "NetworkPolicy", "edgecascade-gateway")
    blocks = [p["ipBlock"]["cidr"] for p in policy["spec"]["ingress"][0]["from"] if "ipBlock" in p]
    assert blocks == ["198.51.100.0/24"]


def volume_claims(workload: Manifest) -> dict[str, str]:
    """mountPath -> the PersistentVolumeClaim mounted there."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return {
        m["mountPath"]: volumes[m["name"]]["persistentVolumeClaim"]["claimName"]
        for m in c.get("volumeMounts", [])
        if "persistentVolumeClaim" in volumes[m["name"]]
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_loads_models_explicitly_from_a_shared_repository(overlay: str) -> None:
    docs = rendered(overlay)
    statefulset = find(docs, "StatefulSet")
    (triton,) = containers(statefulset)
    args = triton["args"]
    # `models publish --triton` loads and unloads versions: explicit mode, everything at start.
    assert "--model-control-mode=explicit" in args and "--load-model=*" in args
    (repository,) = [a.split("=", 1)[1] for a in args if a.startswith("--model-repository=")]
    claim = volume_claims(statefulset)[repository]
    gateway_claims = volume_claims(find(docs, "Deployment"))
    for name in (claim, gateway_claims["/registry"]):  # shared by every replica and gateway
        pvc = find(docs, "PersistentVolumeClaim", name)
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], name
    gateway = containers(find(docs, "Deployment"))[0]
    assert "--registry=/registry" in gateway["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_leaving_triton_goes_unready_and_waits_before_it_gets_sigterm(overlay: str) -> None:
    """The preStop hook (run on a real Triton behind a real gateway by test_gateway_scaling)
    loads a model that cannot load, which strict readiness turns into "not ready", with the
    admin key model control needs, then sleeps; that and Triton's exit fit the grace period."""
    statefulset = find(rendered(overlay), "StatefulSet")
    (triton,) = containers(statefulset)
    script = triton["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert "--strict-readiness=true" in triton["args"]
    assert f"{ADMIN_KEY_NAME}: %s" in script and '"$TRITON_ADMIN_KEY"' in script
    assert "TRITON_ADMIN_KEY" in [variable["name"] for variable in triton["env"]]
    sleep = re.search(r"^sleep (\d+)$", script, re.MULTILINE)
    assert sleep is not None, script
    (exit_timeout,) = [int(a.split("=")[1]) for a in triton["args"] if "--exit-timeout-secs=" in a]
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(sleep.group(1)) + exit_timeout <= grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateways_can_write_the_uploaded_examples_into_the_shared_registry(overlay: str) -> None:
    """ModelSync's UploadExamples keeps each edge's examples under <registry>/examples (the
    gateway's --registry): a read-only mount there failed every upload in the cluster."""
    gateway = find(rendered(overlay), "Deployment")
    spec = gateway["spec"]["template"]["spec"]
    (registry,) = [
        a.split("=", 1)[1] for a in containers(gateway)[0]["args"] if a.startswith("--registry=")
    ]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == registry]
    assert not mount.get("readOnly", False), mount
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert not volume["persistentVolumeClaim"].get("readOnly", False), volume


def adapter_rules(docs: tuple[Manifest, ...]) -> list[dict[str, Any]]:
    config = find(docs, "ConfigMap", "prometheus-adapter-rules")
    rules: list[dict[str, Any]] = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    return rules


@pytest.mark.parametrize(("overlay", "least", "most"), [("dev", 1, 2), ("production", 2, 8)])
def test_triton_autoscales_on_queue_time_per_request(overlay: str, least: int, most: int) -> None:
    docs = rendered(overlay)
    hpa, statefulset = find(docs, "HorizontalPodAutoscaler"), find(docs, "StatefulSet")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (least, most)
    assert "replicas" not in statefulset["spec"]  # the autoscaler owns it
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    (rule,) = [
        r for r in adapter_rules(docs) if r["name"]["as"] == metric["pods"]["metric"]["name"]
    ]
    assert QUEUE_METRIC in rule["seriesQuery"]
    query = rule["metricsQuery"]  # queue time over successful requests, per pod
    assert query.index(QUEUE_METRIC) < query.index("/") < query.index(REQUESTS_METRIC)
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_has_a_disruption_budget_and_a_network_policy(overlay: str) -> None:
    docs = rendered(overlay)
    for workload in workloads(overlay):
        labels = workload["spec"]["selector"]["matchLabels"]
        budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
        assert [b for b in budgets if b["spec"]["selector"]["matchLabels"] == labels], labels
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        assert [p for p in policies if p["spec"]["podSelector"]["matchLabels"] == labels], labels
    triton = find(docs, "PodDisruptionBudget", "triton")["spec"]
    assert triton["maxUnavailable"] == 1  # one replica drained at a time


def grpc_sources(docs: tuple[Manifest, ...], name: str) -> list[dict[str, Any]]:
    """Who the NetworkPolicy `name` lets reach its pods' gRPC port (and with it only KServe's
    ports: gRPC, and REST where it is served)."""
    ingress = find(docs, "NetworkPolicy", name)["spec"]["ingress"]
    rules = [r for r in ingress if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
    kserve = [{"port": "grpc", "protocol": "TCP"}, {"port": "http", "protocol": "TCP"}]
    assert all(r["ports"] in (kserve[:1], kserve) for r in rules)
    return [source for r in rules for source in r["from"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_gateways_reach_triton_and_only_edges_reach_gateways(overlay: str) -> None:
    docs = rendered(overlay)
    gateway_labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    to_triton = grpc_sources(docs, "triton")
    assert {"podSelector": {"matchLabels": {"app": gateway_labels["app"]}}} in to_triton
    # and the model roll-out; nobody else, and no namespace or address range
    assert [s["podSelector"]["matchLabels"]["app"] for s in to_triton] == [
        "edgecascade-gateway",
        "edgecascade-publish",
    ]
    to_gateway = grpc_sources(docs, "edgecascade-gateway")
    assert {"podSelector": {"matchLabels": {"app": "edgecascade-edge"}}} in to_gateway
    assert all(set(s) <= {"podSelector", "ipBlock"} for s in to_gateway)
    assert "Ingress" in find(docs, "NetworkPolicy", "triton")["spec"]["policyTypes"]
