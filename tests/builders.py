"""Hand-built OTLP requests for unit tests."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.pdata import Batch, Signal


def traces(service: str, n: int, scope: str = "lib") -> Batch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attr = rs.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for i in range(n):
        span = ss.spans.add()
        span.name = f"{service}-{i}"
        span.trace_id = i.to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
    return Batch.from_bytes(Signal.TRACES, req.SerializeToString())
