"""Small, deterministic OTLP requests for tests."""

from __future__ import annotations

from otelflow.pdata import Request, Signal


def sample_request(signal: Signal, items: int = 3, service: str = "test-service") -> Request:
    """One resource and scope with `items` spans / gauge points / log records, distinct ids."""
    request = signal.request_type()
    resource = getattr(request, signal.resource_field).add()
    attr = resource.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", service
    scope = getattr(resource, signal.scope_field).add()
    scope.scope.name = "otelflow.test"
    if signal is Signal.METRICS:
        metric = scope.metrics.add()
        metric.name = "test.gauge"
    for i in range(items):
        if signal is Signal.TRACES:
            span = scope.spans.add()
            span.trace_id = bytes([1 + i % 255]) * 16
            span.span_id = bytes([2 + i % 250]) * 8
            span.name = f"span-{i}"
            span.start_time_unix_nano = 1_700_000_000_000_000_000 + i
            span.end_time_unix_nano = span.start_time_unix_nano + 1000
        elif signal is Signal.METRICS:
            point = metric.gauge.data_points.add()
            point.time_unix_nano = 1_700_000_000_000_000_000 + i
            point.as_double = float(i)
        else:
            record = scope.log_records.add()
            record.time_unix_nano = 1_700_000_000_000_000_000 + i
            record.body.string_value = f"log line {i}"
            record.severity_number = 9
    return request
