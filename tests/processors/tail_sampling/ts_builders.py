"""Hand-built traces and a capturing consumer for the tail_sampling tests."""

from __future__ import annotations

import time
from typing import Any

import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.pdata import Batch, Signal
from otelflow.processors.tail_sampling import FACTORY, TailSamplingConfig, TailSamplingProcessor
from otelflow.telemetry.metrics import SelfMetrics

BASE_NS = 1_700_000_000_000_000_000


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def attrs(values: dict[str, Any]) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        kv = KeyValue(key=key)
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.string_value = value
        out.append(kv)
    return out


def span(trace: int, sid: int, *, parent: int = 0, start_ms: float = 0, dur_ms: float = 1,
         status: int = 0, attributes: dict | None = None, trace_state: str = "",
         flags: int = 0, name: str = "op") -> Span:
    s = Span(trace_id=tid(trace), span_id=sid.to_bytes(8, "big"), name=name,
             start_time_unix_nano=BASE_NS + int(start_ms * 1e6),
             end_time_unix_nano=BASE_NS + int((start_ms + dur_ms) * 1e6),
             trace_state=trace_state, flags=flags)
    if parent:
        s.parent_span_id = parent.to_bytes(8, "big")
    s.status.code = status
    s.attributes.extend(attrs(attributes or {}))
    return s


def request(*spans: Span, resource: dict | None = None, scope: dict | None = None,
            scope_name: str = "lib") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attrs(resource or {"service.name": "svc"}))
    ss = rs.scope_spans.add()
    ss.scope.name = scope_name
    ss.scope.attributes.extend(attrs(scope or {}))
    ss.spans.extend(spans)
    return req


class Sink:
    """Collects every batch passed downstream."""

    mutates_data = False

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.times: list[float] = []  # time.monotonic() of each batch

    async def consume(self, batch: Batch) -> None:
        self.batches.append(Batch(Signal.TRACES, raw=batch.to_bytes()))
        self.times.append(time.monotonic())

    def spans(self) -> list[Span]:
        return [sp for b in self.batches for rs in b.message.resource_spans
                for ss in rs.scope_spans for sp in ss.spans]

    def trace_ids(self) -> set[int]:
        return {int.from_bytes(sp.trace_id, "big") for sp in self.spans()}

    def span_keys(self) -> set[tuple[int, int]]:
        return {(int.from_bytes(sp.trace_id, "big"), int.from_bytes(sp.span_id, "big"))
                for sp in self.spans()}


def make(config: dict, sink: Sink | None = None, name: str = "",
         metrics: SelfMetrics | None = None) -> tuple[TailSamplingProcessor, Sink]:
    sink = sink or Sink()
    cfg = TailSamplingConfig.model_validate(config)
    settings = CreateSettings(id=ComponentID("tail_sampling", name), kind=Kind.PROCESSOR,
                              logger=structlog.get_logger(), metrics=metrics or SelfMetrics(),
                              signal=Signal.TRACES)
    return FACTORY.create(settings, cfg, sink), sink


def policy(name: str, type_: str, **settings: Any) -> dict:
    out: dict[str, Any] = {"name": name, "type": type_}
    if settings:
        out[type_] = settings
    return out


async def decide(config: dict, *requests: ExportTraceServiceRequest) -> Sink:
    """Feed requests, then shut down (which decides every pending trace); the kept output."""
    proc, sink = make(config)
    await proc.start(None)
    for req in requests:
        await proc.consume(Batch.of(req))
    await proc.shutdown()
    return sink
