"""The real OTel SDK -> collector (otlp receiver, tail_sampling, file exporter): the error trace
and the slow trace are exported whole, the fast OK trace is not."""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from otelflow.fileformat import read_records
from otelflow.pdata import Signal, iter_scopes
from otelflow.testing.process import CollectorProcess, free_port

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
processors:
  tail_sampling:
    decision_wait: 1s
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
      - {{name: slow, type: latency, latency: {{threshold_ms: 1000}}}}
exporters:
  file:
    path: {out}
    flush_interval: 0s
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: {{receivers: [otlp], processors: [tail_sampling], exporters: [file]}}
"""


def send_traces(port: int) -> dict[str, int]:
    """Three traces of three spans each, spread over several export requests (2 spans each).

    The span that decides a trace (the error child, the slow root) is ended, and so
    exported, first: a loaded machine cannot then push it past the trace's decision."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
        max_export_batch_size=2, schedule_delay_millis=50))
    tracer = provider.get_tracer("e2e")
    start = time.time_ns()
    ids = {}
    for name, duration_ms, error in (("error", 20, True), ("slow", 1500, False),
                                     ("fast", 20, False)):
        root = tracer.start_span(name, start_time=start)
        ctx = set_span_in_context(root)
        children = [tracer.start_span(f"{name}-child-{i}", context=ctx, start_time=start + i)
                    for i in range(2)]
        if error:
            children[1].set_status(Status(StatusCode.ERROR, "payment declined"))
            children[1].end(end_time=start + 5_000_000)
        root.end(end_time=start + duration_ms * 1_000_000)
        for child in children:
            if child.is_recording():
                child.end(end_time=start + 5_000_000)
        ids[name] = root.get_span_context().trace_id
    provider.shutdown()
    return ids


def exported_spans(path) -> dict[int, set[str]]:
    spans: dict[int, set[str]] = {}
    for signal, message in read_records(path) if path.exists() else []:
        assert signal is Signal.TRACES
        for _resource, scope in iter_scopes(signal, message):
            for span in scope.spans:
                spans.setdefault(int.from_bytes(span.trace_id, "big"), set()).add(span.name)
    return spans


def test_error_and_slow_traces_are_exported_fast_ok_trace_is_not(tmp_path):
    port, out = free_port(), tmp_path / "out.jsonl"
    with CollectorProcess(CONFIG.format(port=port, out=out), wait_port=port) as collector:
        ids = send_traces(port)
        deadline = time.monotonic() + 15
        while len(exported_spans(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a wrongly kept fast trace would be decided by now too
        got = exported_spans(out)
        assert collector.stop() == 0, collector.logs()
    assert got == {
        ids["error"]: {"error", "error-child-0", "error-child-1"},
        ids["slow"]: {"slow", "slow-child-0", "slow-child-1"},
    }
