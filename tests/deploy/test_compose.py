"""The reference Docker Compose stack, checked statically (no Docker engine here): every file
it mounts exists, and the Prometheus, Alertmanager and otelflow configs it mounts are valid."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from otelflow.config import load_config
from otelflow.config.service import parse_config

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "deploy" / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


def mounts(service: dict | None = None) -> dict[str, Path]:
    """container path -> host path of the bind mounts of one service (default: all)."""
    out = {}
    for svc in [service] if service else COMPOSE["services"].values():
        for volume in svc.get("volumes", []):
            host, container = volume.split(":")[:2]
            out[container] = (COMPOSE_DIR / host).resolve()
    return out


def test_stack_has_every_component_and_mounts_exist():
    assert {"otelflow-agent", "otelflow-gateway", "prometheus", "alertmanager", "grafana",
            "kafka"} <= set(COMPOSE["services"])
    for container, host in mounts().items():
        assert host.exists(), f"{host} (mounted at {container}) is missing"


def test_prometheus_config_and_rules_are_valid(tmp_path):
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    prom["rule_files"] = [str(mounts()[path]) for path in prom["rule_files"]]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prom))
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert {t.split(":")[0] for t in targets} <= set(COMPOSE["services"])


def test_alertmanager_config_is_valid():
    result = subprocess.run(["amtool", "check-config",
                             str(COMPOSE_DIR / "alertmanager" / "alertmanager.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_otelflow_configs_mounted_are_valid():
    env = {"KAFKA_BROKERS": "kafka:9092", "K8S_NODE_NAME": "compose",
           "PROMETHEUS_REMOTE_WRITE_URL": "http://prometheus:9090/api/v1/write",
           "OTELFLOW_BACKEND_ENDPOINT": "otelflow-debug:4317"}
    for name in ("otelflow-agent", "otelflow-gateway", "otelflow-debug"):
        service = COMPOSE["services"][name]
        config = mounts(service)["/etc/otelflow/config.yaml"]
        parse_config(*load_config([config], env={**env, **service.get("environment", {})}))


def test_grafana_provisions_the_shipped_dashboard():
    provider = yaml.safe_load((COMPOSE_DIR / "grafana" / "provisioning" / "dashboards"
                               / "otelflow.yaml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    assert mounts()[f"{folder}/otelflow.json"].name == "otelflow.json"
