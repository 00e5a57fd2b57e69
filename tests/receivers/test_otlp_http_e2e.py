"""End to end over OTLP/HTTP: the OTel SDK's HTTP exporters (protobuf) and raw JSON POSTs into a
collector subprocess, read back from its file exporter; gRPC and HTTP give identical output."""

from __future__ import annotations

import gzip
import json
import time

import grpc
import pytest
import requests
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelflow import otlp_json
from otelflow.fileformat import read_records
from otelflow.pdata import Signal, count_items, iter_scopes
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.data import sample_request
from otelflow.testing.output import item_bytes
from otelflow.testing.process import CollectorProcess, free_port


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    http, grpc_port = free_port(), free_port()
    out = tmp_path_factory.mktemp("http-e2e") / "out.jsonl"
    yaml = f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
    metrics: {{receivers: [otlp], exporters: [file]}}
    logs: {{receivers: [otlp], exporters: [file]}}
"""
    with CollectorProcess(yaml, wait_port=http) as proc:
        proc.url, proc.grpc_port, proc.out = f"http://127.0.0.1:{http}", grpc_port, out
        yield proc
        assert proc.stop() == 0, proc.logs()


def service_records(collector, signal: Signal, service: str, expected: int,
                    timeout: float = 10.0) -> list:
    """Requests of `signal` written by the file exporter for resources of `service`."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for sig, message in read_records(collector.out) if collector.out.exists() else ():
            resources = getattr(message, signal.resource_field) if sig is signal else ()
            if any(a.value.string_value == service for r in resources
                   for a in r.resource.attributes if a.key == "service.name"):
                found.append(message)
        items = sum(count_items(signal, m) for m in found)
        if items >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_sdk_http_traces(collector):
    resource = Resource.create({"service.name": "http-traces"})
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")))
    tracer = provider.get_tracer("e2e", "1.0")
    for i in range(40):
        with tracer.start_as_current_span(f"op-{i}", attributes={"i": i, "tags": ["a", "b"]}) as s:
            s.add_event("checkpoint", {"note": "ünïcode"})
    provider.shutdown()
    sent = {s.span_id: s for _r, sc in iter_scopes(Signal.TRACES, encode_spans(
        memory.get_finished_spans())) for s in sc.spans}
    got = {s.span_id: s for m in service_records(collector, Signal.TRACES, "http-traces", 40)
           for _r, sc in iter_scopes(Signal.TRACES, m) for s in sc.spans}
    assert len(sent) == 40
    assert got == sent


def test_sdk_http_metrics(collector):
    resource = Resource.create({"service.name": "http-metrics"})
    memory = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[memory])
    meter = provider.get_meter("e2e")
    meter.create_counter("requests").add(7, {"route": "/a"})
    meter.create_histogram("latency", unit="ms").record(12.5, {"route": "/a"})
    exporter = OTLPMetricExporter(endpoint=f"{collector.url}/v1/metrics")
    assert exporter.export(memory.get_metrics_data()).name == "SUCCESS"
    messages = service_records(collector, Signal.METRICS, "http-metrics", 2)
    metrics = {m.name: m for msg in messages for _r, sc in iter_scopes(Signal.METRICS, msg)
               for m in sc.metrics}
    assert metrics["requests"].sum.data_points[0].as_int == 7
    assert metrics["latency"].histogram.data_points[0].sum == 12.5
    provider.shutdown()


def test_sdk_http_logs(collector):
    resource = Resource.create({"service.name": "http-logs"})
    provider = LoggerProvider(resource=resource)
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
    memory = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=f"{collector.url}/v1/logs")))
    logger = provider.get_logger("e2e")
    for i in range(25):
        logger.emit(severity_number=SeverityNumber.ERROR, body=f"line {i}", attributes={"n": i})
    provider.shutdown()
    sent = item_bytes(Signal.LOGS, [encode_logs(memory.get_finished_logs())])
    got = item_bytes(Signal.LOGS, service_records(collector, Signal.LOGS, "http-logs", 25))
    assert len(sent) == 25
    assert got == sent


RAW_JSON = {
    Signal.TRACES: {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "raw-json"}}]},
        "scopeSpans": [{"scope": {"name": "curl"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173", "name": "checkout", "kind": 2,
            "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": 1544712661000000000,
            "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}],
            "status": {"code": "STATUS_CODE_OK"}}]}]}]},
    Signal.METRICS: {"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "raw-json"}}]},
        "scopeMetrics": [{"metrics": [{"name": "queue.size", "sum": {
            "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE", "isMonotonic": False,
            "dataPoints": [{"asInt": "17", "timeUnixNano": "1544712660000000000"},
                           {"asDouble": 2.5, "timeUnixNano": 1544712661000000000}]}}]}]}]},
    Signal.LOGS: {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "raw-json"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1544712660300000000", "severityNumber": "SEVERITY_NUMBER_INFO",
            "body": {"stringValue": "Example log record"},
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]}]}]},
}


@pytest.mark.parametrize("signal", list(Signal))
def test_raw_json_post(collector, signal):
    response = requests.post(f"{collector.url}/v1/{signal.value}", json=RAW_JSON[signal], timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {}
    expected = 2 if signal is Signal.METRICS else 1
    messages = service_records(collector, signal, "raw-json", expected)
    assert len(messages) == 1
    message = messages[0]
    if signal is Signal.TRACES:
        span = message.resource_spans[0].scope_spans[0].spans[0]
        assert (span.trace_id.hex(), span.parent_span_id.hex()) == (
            "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b173")
        assert span.kind == 2 and span.status.code == 1
        assert span.attributes[0].value.int_value == 200
    elif signal is Signal.METRICS:
        points = message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points
        assert [points[0].as_int, points[1].as_double] == [17, 2.5]
        assert len(points) == expected
    else:
        record = message.resource_logs[0].scope_logs[0].log_records[0]
        assert record.severity_number == 9 and record.span_id.hex() == "eee19b7ec3c1b174"


@pytest.mark.parametrize("signal", list(Signal))
def test_grpc_and_http_produce_identical_output(collector, signal):
    service = f"same-{signal.value}"
    request = sample_request(signal, 4, service=service)
    wire = request.SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        channel.unary_unary(f"/{GRPC_SERVICES[signal]}/Export")(wire, timeout=10)
    url = f"{collector.url}/v1/{signal.value}"
    proto = {"Content-Type": "application/x-protobuf"}
    for body, headers in (
            (wire, proto),
            (gzip.compress(wire), {**proto, "Content-Encoding": "gzip"}),
            (otlp_json.dumps(request).encode(), {"Content-Type": "application/json"})):
        assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200
    messages = service_records(collector, signal, service, 16)
    assert len(messages) == 4
    assert all(m == request for m in messages)
    lines = [line for line in collector.out.read_text().splitlines() if service in line]
    assert len(lines) == 4 and len(set(lines)) == 1
    assert json.loads(lines[0]) == json.loads(otlp_json.dumps(request))
