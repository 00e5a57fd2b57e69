"""The shipped Prometheus rules and Grafana dashboard against a real Prometheus scraping a real
collector: every query parses, every metric they name is one the collector exports, and a forced
export failure makes the matching alert go pending/firing."""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from otelflow.testing import build
from otelflow.testing.process import CollectorProcess, free_port
from otelflow.testing.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
RULES = (ROOT / "deploy" / "prometheus" / "rules.yaml").read_text()
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "otelflow.json").read_text())
METRIC_NAME = re.compile(r"\b(?:otelcol|otelflow)_[a-z0-9_]+\b")

COLLECTOR = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}}}}}
processors:
  memory_limiter: {{check_interval: 100ms, limit_mib: 8000, spike_limit_mib: 1000}}
  tail_sampling:
    decision_wait: 100ms
    policies: [{{name: everything, type: always_sample}}]
  drift:
    window: 5
    warmup: 10
    consecutive: 1
    psi_threshold: null
    features: [{{name: duration, span: {{}}}}]
  batch: {{timeout: 50ms}}
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
  otlp/dead:
    endpoint: 127.0.0.1:{dead}
    tls: {{insecure: true}}
    timeout: 200ms
    retry_on_failure: {{enabled: false}}
    sending_queue: {{queue_size: 1, num_consumers: 1}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, tail_sampling, drift, batch]
      exporters: [file, otlp/dead]
    metrics: {{receivers: [otlp], processors: [batch], exporters: [file, otlp/dead]}}
    logs: {{receivers: [otlp], exporters: [file, otlp/dead]}}
"""

PROMETHEUS = """
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{{rules}}"]
scrape_configs:
  - job_name: otelflow
    static_configs: [{{targets: ["127.0.0.1:{metrics}"]}}]
"""


def export(channel: grpc.Channel, service: str, body: bytes) -> None:
    call = channel.unary_unary(f"/opentelemetry.proto.collector.{service}/Export")
    with contextlib.suppress(grpc.RpcError):  # refusals are part of what this test provokes
        call(body, timeout=5)


def drive(port: int, rounds: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for i in range(rounds):
            spans = [build.span(f"op-{j}", {"i": i}) for j in range(5)]
            export(channel, "trace.v1.TraceService", build.traces(*spans).SerializeToString())
            export(channel, "metrics.v1.MetricsService",
                   build.metrics(build.gauge("g", i)).SerializeToString())
            export(channel, "logs.v1.LogsService", build.logs(build.log(f"l{i}")).SerializeToString())
        for service in ("trace.v1.TraceService", "metrics.v1.MetricsService", "logs.v1.LogsService"):
            export(channel, service, b"\xff\xff not protobuf")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    grpc_port, metrics_port = free_port(), free_port()
    out = tmp_path_factory.mktemp("obs") / "out.jsonl"
    config = COLLECTOR.format(grpc=grpc_port, out=out, dead=free_port(), metrics=metrics_port)
    with CollectorProcess(config, wait_port=grpc_port) as collector, \
            PrometheusServer(PROMETHEUS.format(metrics=metrics_port), rules_text=RULES) as prom:
        drive(grpc_port, 40)
        time.sleep(1.0)  # tail sampling decisions, drift windows, a few scrapes
        yield collector, prom, grpc_port, metrics_port


def exported_names(metrics_port: int) -> set[str]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    names = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]] + [
        v["query"].removeprefix("label_values(").rsplit(",", 1)[0]
        for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]


def concrete(expr: str) -> str:
    return (expr.replace("$__rate_interval", "1m").replace('"$job"', '".*"')
            .replace('"$instance"', '".*"'))


def test_every_dashboard_query_parses_in_prometheus(stack):
    _collector, prom, _g, _m = stack
    for expr in dashboard_queries():
        body = prom.api("query", query=concrete(expr))
        assert body["status"] == "success", (expr, body)


def test_dashboard_and_rules_name_only_exported_metrics(stack):
    _collector, _prom, _g, metrics_port = stack
    names = exported_names(metrics_port)
    wanted = set(METRIC_NAME.findall(RULES)) | {
        n for expr in dashboard_queries() for n in METRIC_NAME.findall(expr)}
    assert len(wanted) > 15
    missing = sorted(wanted - names)
    assert not missing, f"not exported by the collector: {missing}"


def test_forced_export_failure_raises_the_matching_alert(stack):
    _collector, prom, grpc_port, _m = stack
    deadline = time.monotonic() + 30
    while True:
        drive(grpc_port, 3)
        alerts = prom.api("alerts")["data"]["alerts"]
        states = {(a["labels"]["alertname"], a["labels"].get("exporter")): a["state"] for a in alerts}
        if states.get(("OtelflowExporterSendFailed", "otlp/dead")) in ("pending", "firing"):
            break
        assert time.monotonic() < deadline, f"no export-failure alert; alerts: {alerts}"
        time.sleep(0.5)
    assert ("OtelflowExporterSendFailed", "file") not in states  # the healthy exporter is quiet
    rules = prom.api("rules")["data"]["groups"]
    assert {g["name"] for g in rules} == {"otelflow.recording", "otelflow.alerts"}
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
