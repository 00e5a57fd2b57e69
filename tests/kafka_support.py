"""Shared pieces of the Kafka tests: OTLP request builders, a capturing sink, settings."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

import structlog
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.component import ComponentID, CreateSettings, Kind, RetryableError
from otelflow.pdata import Signal, iter_scopes
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.sink import CaptureExporter


def settings(kind: Kind, cid: str = "kafka", metrics: SelfMetrics | None = None) -> CreateSettings:
    return CreateSettings(ComponentID.parse(cid), kind, structlog.get_logger().bind(name=cid),
                          metrics or SelfMetrics())


def traces(n_traces: int, spans: int, services: int = 1,
           attrs: int = 3) -> ExportTraceServiceRequest:
    """`n_traces` traces of `spans` spans, spread over `services` resources, interleaved."""
    req = ExportTraceServiceRequest()
    scopes = []
    for s in range(services):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc-{s}"
        rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
        ss = rs.scope_spans.add()
        ss.scope.name = f"lib-{s}"
        scopes.append(ss)
    trace_ids = [os.urandom(16) for _ in range(n_traces)]
    for i in range(spans):
        for t, tid in enumerate(trace_ids):
            span = scopes[(t + i) % services].spans.add(trace_id=tid, span_id=os.urandom(8),
                                                         name=f"op-{i}")
            for a in range(attrs):
                span.attributes.add(key=f"k{a}").value.string_value = f"value-{a}-{i}"
    return req


def metrics(resources: int, points: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    for r in range(resources):
        rm = req.resource_metrics.add()
        rm.resource.attributes.add(key="service.name").value.string_value = f"svc-{r}"
        sm = rm.scope_metrics.add()
        m = sm.metrics.add(name="requests")
        for p in range(points):
            dp = m.sum.data_points.add(as_int=p, time_unix_nano=time.time_ns())
            dp.attributes.add(key="p").value.int_value = p
    return req


def logs(n: int, body: Callable[[int], object] = lambda i: f"line {i}") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(n):
        rec = sl.log_records.add(time_unix_nano=time.time_ns(), trace_id=os.urandom(16))
        value = body(i)
        if isinstance(value, bytes):
            rec.body.bytes_value = value
        else:
            rec.body.string_value = str(value)
    return req


def span_ids(message) -> list[bytes]:
    return [s.span_id for _, scope in iter_scopes(Signal.TRACES, message) for s in scope.spans]


def capture(fail_first: int = 0) -> CaptureExporter:
    """A sink (consumer or exporter) whose first `fail_first` calls raise RetryableError."""
    attempts = itertools.count(1)
    return CaptureExporter(lambda _batch: RetryableError("backend busy", 0.01)
                           if next(attempts) <= fail_first else None)


async def read_topic(bootstrap: str, topic: str, until: Callable[[list], bool],
                     timeout: float = 20.0) -> list:
    """Every record of `topic` from the beginning (no group), once `until(records)` holds."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(records)} records in {topic}")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records
