"""The real OTel SDK -> collector A (batch, otlp exporter) -> collector B (file exporter):
every span, metric point and log record arrives intact, compared field by field."""

from __future__ import annotations

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link

from otelflow.pdata import Signal, iter_scopes, metric_points
from otelflow.testing.output import item_bytes, read_output
from otelflow.testing.process import CollectorProcess, free_port

RESOURCE = Resource.create({"service.name": "e2e-test", "deployment.environment": "ci",
                            "host.id": 42})


def collector_b(port: int, out: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {out}
    flush_interval: 0s
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
    metrics: {{receivers: [otlp], exporters: [file]}}
    logs: {{receivers: [otlp], exporters: [file]}}
"""


def collector_a(port: int, upstream: int) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    send_batch_size: 300
    timeout: 100ms
exporters:
  otlp/b:
    endpoint: 127.0.0.1:{upstream}
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp/b]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [otlp/b]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [otlp/b]}}
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    port_a, port_b = free_port(), free_port()
    out = tmp_path_factory.mktemp("e2e") / "out.jsonl"
    with CollectorProcess(collector_b(port_b, str(out)), wait_port=port_b) as b, \
            CollectorProcess(collector_a(port_a, port_b), wait_port=port_a) as a:
        yield port_a, out
        assert a.stop() == 0, a.logs()
        assert b.stop() == 0, b.logs()


def test_traces_arrive_intact(chain):
    port, out = chain
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True), max_export_batch_size=200))
    tracer = provider.get_tracer("e2e", "1.2.3")
    previous = None
    for i in range(1000):
        links = [Link(previous.get_span_context(), {"link.n": i})] if previous else []
        with tracer.start_as_current_span(f"op-{i % 7}", links=links,
                                          attributes={"i": i, "even": i % 2 == 0,
                                                      "ratio": i / 3, "tags": ["a", "b"]}) as span:
            span.add_event("checkpoint", {"step": i, "note": "ünïcode"})
            with tracer.start_as_current_span("child") as child:
                child.set_attribute("child.of", i)
            previous = span
    provider.shutdown()
    sent = encode_spans(memory.get_finished_spans())
    expected = {s.span_id: (r.resource, sc.scope, s)
                for r, sc in iter_scopes(Signal.TRACES, sent) for s in sc.spans}
    assert len(expected) == 2000
    got = {}
    for msg in read_output(out, Signal.TRACES, 2000):
        for r, sc in iter_scopes(Signal.TRACES, msg):
            for s in sc.spans:
                got[s.span_id] = (r.resource, sc.scope, s)
    assert got.keys() == expected.keys()
    for span_id, (resource, scope, span) in expected.items():
        assert got[span_id] == (resource, scope, span)


def test_metrics_of_every_kind_arrive(chain):
    port, out = chain
    memory = InMemoryMetricReader()
    exporting = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
        export_interval_millis=60_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[memory, exporting])
    meter = provider.get_meter("e2e")
    counter = meter.create_counter("requests", unit="1", description="requests served")
    updown = meter.create_up_down_counter("queue.depth")
    histogram = meter.create_histogram("latency", unit="ms")
    gauge = meter.create_gauge("temperature", unit="Cel")
    for i in range(50):
        attrs = {"route": f"/r{i % 3}"}
        counter.add(i, attrs)
        updown.add(5 if i % 2 else -2, attrs)
        histogram.record(i * 1.5, attrs)
        gauge.set(20 + i, attrs)
    expected = points_by_series(memory.get_metrics_data())
    provider.shutdown()
    messages = read_output(out, Signal.METRICS, len(expected))
    got = {}
    for msg in messages:
        for r, sc in iter_scopes(Signal.METRICS, msg):
            assert {a.key for a in r.resource.attributes} >= {"service.name", "host.id"}
            for m in sc.metrics:
                for p in metric_points(m):
                    got[(m.name, m.WhichOneof("data"), frozenset(
                        (a.key, a.value.string_value) for a in p.attributes))] = point_value(p)
    assert got == expected


def points_by_series(data) -> dict:
    kinds = {"Sum": "sum", "Gauge": "gauge", "Histogram": "histogram"}
    out = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = kinds[type(m.data).__name__]
                for p in m.data.data_points:
                    key = (m.name, kind, frozenset(p.attributes.items()))
                    if kind == "histogram":
                        out[key] = (p.count, p.sum, tuple(p.bucket_counts),
                                    tuple(p.explicit_bounds))
                    else:
                        out[key] = p.value
    return out


def point_value(p):
    if p.DESCRIPTOR.name == "HistogramDataPoint":
        return (p.count, p.sum, tuple(p.bucket_counts), tuple(p.explicit_bounds))
    return p.as_int if p.WhichOneof("value") == "as_int" else p.as_double


def test_logs_arrive_intact(chain):
    port, out = chain
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    logger = provider.get_logger("e2e")
    tracer = TracerProvider(resource=RESOURCE).get_tracer("e2e")
    with tracer.start_as_current_span("with-logs"):
        for i in range(300):
            logger.emit(severity_number=SeverityNumber.WARN, severity_text="WARN",
                        body=f"log line {i}", attributes={"n": i, "user": "alice"})
    provider.shutdown()
    sent = encode_logs(memory.get_finished_logs())
    expected = item_bytes(Signal.LOGS, [sent])
    got = item_bytes(Signal.LOGS, read_output(out, Signal.LOGS, 300))
    assert len(expected) == 300
    assert got == expected
