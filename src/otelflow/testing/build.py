"""Hand-built OTLP requests for tests: `traces(span("GET /", {"http.response.status_code": 500}))`.

Attributes are plain dicts (str, bool, int, float, bytes, lists, nested dicts). Times are unix
nanoseconds and default to now; ids are random unless given (as hex or bytes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric, NumberDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otelflow.anyvalue import set_any
from otelflow.pdata import Request, Signal

SPAN_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUS_CODES = {"unset": 0, "ok": 1, "error": 2}
SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


def to_any_value(value: Any) -> AnyValue:
    out = AnyValue()
    set_any(out, value)
    return out


def key_values(attributes: Mapping[str, Any] | None) -> list[KeyValue]:
    return [KeyValue(key=k, value=to_any_value(v)) for k, v in (attributes or {}).items()]


def _id(value: str | bytes | None, size: int) -> bytes:
    if value is None:
        return os.urandom(size)
    raw = bytes.fromhex(value) if isinstance(value, str) else value
    if len(raw) != size:
        raise ValueError(f"an id of {size} bytes is needed, got {len(raw)}")
    return raw


def span(name: str, attributes: Mapping[str, Any] | None = None, *, trace_id: str | bytes | None = None,
         span_id: str | bytes | None = None, parent_span_id: str | bytes | None = None,
         kind: str = "internal", status: str = "unset", message: str = "",
         start: int | None = None, duration_ms: float = 10.0) -> Span:
    start = time.time_ns() if start is None else start
    return Span(name=name, trace_id=_id(trace_id, 16), span_id=_id(span_id, 8),
                parent_span_id=_id(parent_span_id, 8) if parent_span_id else b"",
                kind=SPAN_KINDS[kind], attributes=key_values(attributes),
                start_time_unix_nano=start, end_time_unix_nano=start + int(duration_ms * 1e6),
                status=Status(code=STATUS_CODES[status], message=message))


def log(body: Any, attributes: Mapping[str, Any] | None = None, *, severity: str = "INFO",
        time_ns: int | None = None, trace_id: str | bytes | None = None,
        span_id: str | bytes | None = None) -> LogRecord:
    stamp = time.time_ns() if time_ns is None else time_ns
    return LogRecord(body=to_any_value(body), attributes=key_values(attributes),
                     severity_text=severity, severity_number=SEVERITIES[severity.upper()],
                     time_unix_nano=stamp, observed_time_unix_nano=stamp,
                     trace_id=_id(trace_id, 16) if trace_id else b"",
                     span_id=_id(span_id, 8) if span_id else b"")


def _point(value: float, attributes: Mapping[str, Any] | None, time_ns: int | None) -> NumberDataPoint:
    stamp = time.time_ns() if time_ns is None else time_ns
    point = NumberDataPoint(attributes=key_values(attributes), time_unix_nano=stamp)
    if isinstance(value, int) and not isinstance(value, bool):
        point.as_int = value
    else:
        point.as_double = float(value)
    return point


def gauge(name: str, value: float, attributes: Mapping[str, Any] | None = None, *, unit: str = "",
          time_ns: int | None = None) -> Metric:
    metric = Metric(name=name, unit=unit)
    metric.gauge.data_points.append(_point(value, attributes, time_ns))
    return metric


def counter(name: str, value: float, attributes: Mapping[str, Any] | None = None, *, unit: str = "",
            time_ns: int | None = None, monotonic: bool = True) -> Metric:
    """A cumulative sum with one point."""
    metric = Metric(name=name, unit=unit)
    metric.sum.is_monotonic = monotonic
    metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    metric.sum.data_points.append(_point(value, attributes, time_ns))
    return metric


def _request(signal: Signal, items: tuple, resource: Mapping[str, Any] | None, scope: str) -> Request:
    request = signal.request_type()
    group = getattr(request, signal.resource_field).add()
    group.resource.attributes.extend(key_values(resource or {"service.name": "test-service"}))
    scope_group = getattr(group, signal.scope_field).add()
    scope_group.scope.name = scope
    getattr(scope_group, signal.item_field).extend(items)
    return request


def traces(*spans: Span, resource: Mapping[str, Any] | None = None, scope: str = "test") -> Request:
    """An ExportTraceServiceRequest; `resource` defaults to {"service.name": "test-service"}."""
    return _request(Signal.TRACES, spans, resource, scope)


def metrics(*metrics: Metric, resource: Mapping[str, Any] | None = None, scope: str = "test") -> Request:
    return _request(Signal.METRICS, metrics, resource, scope)


def logs(*records: LogRecord, resource: Mapping[str, Any] | None = None, scope: str = "test") -> Request:
    return _request(Signal.LOGS, records, resource, scope)
