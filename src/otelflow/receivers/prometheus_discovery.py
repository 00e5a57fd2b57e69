"""Target discovery for the prometheus receiver: static_configs, file_sd_configs and
kubernetes_sd_configs (role `pod`, the `prometheus.io/scrape` annotation pattern)."""

from __future__ import annotations

import glob
import json
import re
import ssl
from pathlib import Path
from typing import Literal

import aiohttp
import yaml
from pydantic import Field

from otelflow.config.types import ConfigModel, Duration

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")

Target = dict[str, str]


class StaticConfig(ConfigModel):
    targets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class FileSDConfig(ConfigModel):
    files: list[str] = Field(min_length=1)
    refresh_interval: Duration = 300.0


class NamespaceDiscovery(ConfigModel):
    names: list[str] = Field(default_factory=list)
    own_namespace: bool = False


class Selector(ConfigModel):
    role: Literal["pod"]
    label: str | None = None
    field: str | None = None


class KubernetesTLS(ConfigModel):
    ca_file: str | None = None
    insecure_skip_verify: bool = False


class KubernetesSDConfig(ConfigModel):
    role: Literal["pod"]
    api_server: str | None = None  # None: in-cluster (KUBERNETES_SERVICE_HOST, service account)
    namespaces: NamespaceDiscovery = Field(default_factory=NamespaceDiscovery)
    selectors: list[Selector] = Field(default_factory=list)
    bearer_token_file: str | None = None
    tls_config: KubernetesTLS = Field(default_factory=KubernetesTLS)
    refresh_interval: Duration = 30.0  # otelflow polls the API; Prometheus watches


def static_targets(configs: list[StaticConfig]) -> list[Target]:
    return [{"__address__": t, **c.labels} for c in configs for t in c.targets]


def file_targets(config: FileSDConfig) -> list[Target]:
    """Targets from JSON/YAML files in Prometheus' file_sd format (unreadable files skipped)."""
    out: list[Target] = []
    for pattern in config.files:
        for path in sorted(glob.glob(pattern)):
            try:
                text = Path(path).read_text()
                groups = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError):
                continue
            for group in groups or []:
                labels = {str(k): str(v) for k, v in (group.get("labels") or {}).items()}
                out += [{"__address__": str(t), "__meta_filepath": path, **labels}
                        for t in group.get("targets") or []]
    return out


async def kubernetes_targets(config: KubernetesSDConfig, session: aiohttp.ClientSession) -> list[Target]:
    base, headers, ssl_ctx = _api_access(config)
    params = {}
    for sel in config.selectors:
        if sel.label:
            params["labelSelector"] = sel.label
        if sel.field:
            params["fieldSelector"] = sel.field
    paths = ([f"/api/v1/namespaces/{ns}/pods" for ns in config.namespaces.names]
             or ["/api/v1/pods"])
    targets: list[Target] = []
    for path in paths:
        async with session.get(base + path, params=params, headers=headers, ssl=ssl_ctx,
                               timeout=aiohttp.ClientTimeout(total=10)) as resp:
            resp.raise_for_status()
            body = await resp.json()
        for pod in body.get("items", []):
            targets += pod_targets(pod)
    return targets


def _api_access(config: KubernetesSDConfig) -> tuple[str, dict[str, str], ssl.SSLContext | bool]:
    import os

    base = config.api_server
    token_file = config.bearer_token_file
    ca_file = config.tls_config.ca_file
    if base is None:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host:
            raise RuntimeError("kubernetes_sd_configs: no api_server and not running in a cluster")
        base = f"https://{host}:{port}"
        token_file, ca_file = token_file or IN_CLUSTER_TOKEN, ca_file or IN_CLUSTER_CA
    headers = {}
    if token_file:
        headers["Authorization"] = f"Bearer {Path(token_file).read_text().strip()}"
    ssl_ctx: ssl.SSLContext | bool = True
    if base.startswith("https"):
        if config.tls_config.insecure_skip_verify:
            ssl_ctx = False
        elif ca_file:
            ssl_ctx = ssl.create_default_context(cafile=ca_file)
    return base.rstrip("/"), headers, ssl_ctx


def pod_targets(pod: dict) -> list[Target]:
    """One target per declared container port (or one per pod without ports), with Prometheus'
    `__meta_kubernetes_pod_*` labels."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    ip = status.get("podIP")
    if not ip:
        return []
    common = {
        "__meta_kubernetes_namespace": meta.get("namespace", ""),
        "__meta_kubernetes_pod_name": meta.get("name", ""),
        "__meta_kubernetes_pod_uid": meta.get("uid", ""),
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_ready": str(any(c.get("type") == "Ready" and c.get("status") == "True"
                                               for c in status.get("conditions", []))).lower(),
    }
    for kind in ("label", "annotation"):
        for key, value in (meta.get(kind + "s") or {}).items():
            name = _UNSAFE.sub("_", key)
            common[f"__meta_kubernetes_pod_{kind}_{name}"] = str(value)
            common[f"__meta_kubernetes_pod_{kind}present_{name}"] = "true"
    targets = []
    for container in spec.get("containers", []):
        for port in container.get("ports") or []:
            targets.append({**common, "__address__": f"{ip}:{port['containerPort']}",
                            "__meta_kubernetes_pod_container_name": container.get("name", ""),
                            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                            "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                            "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP")})
    return targets or [{**common, "__address__": ip}]
