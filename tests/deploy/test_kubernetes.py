"""Kustomize overlays render, every manifest validates against the Kubernetes schemas, and the
configs they ship are the repository's configs and are valid."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from otelflow.config import load_config
from otelflow.config.service import parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = {"sidecar": ("Deployment", "config/sidecar.yaml"),
            "daemonset": ("DaemonSet", "config/agent.yaml"),
            "gateway": ("Deployment", "config/gateway.yaml")}
K8S_VERSION = "1.30"


def render(overlay: str) -> list[dict]:
    """`kubectl kustomize` when kubectl is installed, else the same subset of kustomize that
    the overlays use (resources, configMapGenerator, images, namespace, labels)."""
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], check=True,
                             capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    return mini_kustomize(K8S / overlay)


def mini_kustomize(directory: Path) -> list[dict]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for resource in spec.get("resources", []):
        path = directory / resource
        if path.is_dir():
            docs += mini_kustomize(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for gen in spec.get("configMapGenerator", []):
        data = {}
        for item in gen["files"]:
            key, _, name = item.partition("=")
            data[key] = (directory / (name or key)).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"]}, "data": data})
    for doc in docs:
        if spec.get("namespace") and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = spec["namespace"]
        for group in spec.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(group["pairs"])
        for image in spec.get("images", []):
            for container in _pod_spec(doc).get("containers", []):
                if container["image"] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


def _pod_spec(doc: dict) -> dict:
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_and_validates(overlay):
    docs = render(overlay)
    assert {"Namespace", "ServiceAccount", "ConfigMap", OVERLAYS[overlay][0]} <= {
        d["kind"] for d in docs}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_can_fail():
    doc = copy.deepcopy(by_kind(render("daemonset"), "DaemonSet")[0])
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "4317/tcp"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_collector_container_probes_resources_and_scrape_annotations(overlay):
    docs = render(overlay)
    workload = by_kind(docs, OVERLAYS[overlay][0])[0]
    template = workload["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8888"
    collector = next(c for c in template["spec"]["containers"] if c["name"] == "otelflow")
    assert collector["image"].startswith("ghcr.io/otelflow/otelflow:")
    assert collector["livenessProbe"]["httpGet"] == {"path": "/health", "port": 13133}
    assert collector["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 13133}
    assert collector["securityContext"]["runAsNonRoot"] is True
    assert collector["resources"]["limits"]["memory"]


def test_daemonset_uses_downward_api_and_host_ports():
    ds = by_kind(render("daemonset"), "DaemonSet")[0]
    container = ds["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["K8S_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["K8S_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert {p["hostPort"] for p in container["ports"] if "hostPort" in p} == {4317, 4318}
    service = by_kind(render("daemonset"), "Service")[0]
    assert service["spec"]["internalTrafficPolicy"] == "Local"


def test_gateway_autoscales():
    hpa = by_kind(render("gateway"), "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "otelflow-gateway"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def memory_limit_mib(text: str) -> int:
    limit = text.removesuffix("Mi")
    return int(limit) if limit.isdigit() else int(text.removesuffix("Gi")) * 1024


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_shipped_config_is_the_repository_config_and_valid(overlay):
    docs = render(overlay)
    shipped = by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"]
    assert shipped == (ROOT / OVERLAYS[overlay][1]).read_text()
    workload = by_kind(docs, OVERLAYS[overlay][0])[0]
    collector = next(c for c in workload["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "otelflow")
    env = {e["name"]: e.get("value", "x") for e in collector["env"]}
    env = {k: v.replace("$(K8S_POD_IP)", "10.0.0.1") for k, v in env.items()}
    config = parse_config(*load_config(text=shipped, env={**env, "K8S_NODE_NAME": "node-a",
                                                           "K8S_POD_IP": "10.0.0.1"}))
    limiter = config.raw.get("processors", {}).get("memory_limiter")
    if limiter:  # the hard limit sits below the container's, leaving room for the runtime
        limit = memory_limit_mib(collector["resources"]["limits"]["memory"])
        assert limiter["limit_mib"] <= 0.8 * limit
