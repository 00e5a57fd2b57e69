"""Helpers shared by the drift tests: build a processor, make spans, read self-metrics."""

from __future__ import annotations

from typing import Any

import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.pdata import Batch, Signal
from otelflow.processors.drift import DriftConfig, DriftProcessor
from otelflow.telemetry.metrics import SelfMetrics


class Sink:
    """A consumer that keeps what it receives."""

    mutates_data = False

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)


class FakeHost:
    def __init__(self) -> None:
        self.sources: list = []
        self.pipeline_entries: dict[str, Any] = {}

    def register_alert_source(self, source) -> None:
        self.sources.append(source)

    def alerts(self) -> list[dict]:
        return [a for s in self.sources for a in s()]


def make_processor(config: dict, signal: Signal = Signal.TRACES,
                   metrics: SelfMetrics | None = None) -> tuple[DriftProcessor, Sink]:
    sink = Sink()
    settings = CreateSettings(ComponentID.parse("drift"), Kind.PROCESSOR,
                              logger=structlog.get_logger("test"), metrics=metrics or SelfMetrics(),
                              signal=signal, pipeline=signal.value)
    return DriftProcessor(settings, DriftConfig.model_validate(config), sink), sink


def spans_request(durations_ms, service: str = "inference", name: str = "predict",
                  resource_attrs: dict[str, str] | None = None,
                  span_attrs: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    add_resource_spans(request, durations_ms, service, name, resource_attrs, span_attrs)
    return request


def add_resource_spans(request, durations_ms, service="inference", name="predict",
                       resource_attrs=None, span_attrs=None) -> None:
    rs = request.resource_spans.add()
    for key, value in {"service.name": service, **(resource_attrs or {})}.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    ss = rs.scope_spans.add()
    start = 1_700_000_000_000_000_000
    for i, duration in enumerate(durations_ms):
        span = ss.spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = name
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + int(duration * 1e6)
        for key, value in (span_attrs or {}).items():
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, float):
                kv.value.double_value = value
            elif isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value


def metric_value(metrics: SelfMetrics, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
