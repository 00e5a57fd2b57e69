"""The exact ConfigMap config of the DaemonSet manifest, with the environment the manifest and
the downward API give the container, serves OTLP traffic into Kafka and answers its probes."""

from __future__ import annotations

import time
import urllib.request

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelflow.testing.kafka_mock import MockKafkaCluster, kafka_cluster  # noqa: F401 (fixture)
from otelflow.testing.process import CollectorProcess, free_port
from tests.deploy.test_kubernetes import by_kind, render
from tests.kafka_support import read_topic


def manifest_env(container: dict, ports: dict[str, int], brokers: str, storage: str) -> dict:
    """The container's env: literal values from the manifest, downward-API fields as the kubelet
    would fill them; listen ports moved to free ones so the test can run anywhere."""
    downward = {"spec.nodeName": "node-a", "status.podIP": "127.0.0.1",
                "metadata.name": "otelflow-agent-x7k2p"}
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            env[item["name"]] = downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = item["value"]
            for name, pod_value in env.items():  # $(VAR) references, as Kubernetes expands them
                value = value.replace(f"$({name})", pod_value)
            env[item["name"]] = value
    for name, default in (("OTELFLOW_GRPC_ENDPOINT", 4317), ("OTELFLOW_HTTP_ENDPOINT", 4318),
                          ("OTELFLOW_METRICS_ADDRESS", 8888), ("OTELFLOW_HEALTH_ENDPOINT", 13133)):
        env[name] = env[name].replace(str(default), str(ports[name]))
    env["KAFKA_BROKERS"], env["OTELFLOW_STORAGE_DIR"] = brokers, storage
    return env


async def test_daemonset_configmap_serves_traffic_and_probes(kafka_cluster: MockKafkaCluster,  # noqa: F811
                                                               tmp_path):
    docs = render("daemonset")
    config = by_kind(docs, "ConfigMap")[0]["data"]["config.yaml"]
    container = by_kind(docs, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]
    for topic in ("otlp_spans", "otlp_metrics", "otlp_logs"):
        kafka_cluster.create_topic(topic, 6)
    ports = {name: free_port() for name in ("OTELFLOW_GRPC_ENDPOINT", "OTELFLOW_HTTP_ENDPOINT",
                                            "OTELFLOW_METRICS_ADDRESS", "OTELFLOW_HEALTH_ENDPOINT")}
    env = manifest_env(container, ports, kafka_cluster.bootstrap_servers, str(tmp_path / "queue"))
    with CollectorProcess(config, wait_port=ports["OTELFLOW_GRPC_ENDPOINT"], env=env) as agent:
        health = f"http://127.0.0.1:{ports['OTELFLOW_HEALTH_ENDPOINT']}"
        assert _status(health + "/health") == 200
        assert _status(health + "/ready") == 200
        provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"127.0.0.1:{ports['OTELFLOW_GRPC_ENDPOINT']}", insecure=True)))
        with provider.get_tracer("t").start_as_current_span("pay") as span:
            span.set_attribute("user.email", "alice@example.com")
        provider.shutdown()
        records = await read_topic(kafka_cluster.bootstrap_servers, "otlp_spans",
                                   lambda r: len(r) >= 1)
        request = ExportTraceServiceRequest.FromString(records[0].value)
        resource = {a.key: a.value.string_value
                    for a in request.resource_spans[0].resource.attributes}
        assert resource["k8s.node.name"] == "node-a"
        assert b"alice@example.com" not in records[0].value
        scraped = urllib.request.urlopen(
            f"http://127.0.0.1:{ports['OTELFLOW_METRICS_ADDRESS']}/metrics", timeout=5).read()
        assert b'otelcol_exporter_sent_spans_total{exporter="kafka"} 1.0' in scraped
        assert agent.stop() == 0, agent.logs()


def _status(url: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
