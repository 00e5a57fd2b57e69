"""Helpers shared by the delivery tests: batches with known span ids, a scripted exporter."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.component import Exporter
from otelflow.pdata import Batch, Signal, iter_scopes


def spans_batch(first: int, n: int) -> Batch:
    """A traces batch with spans whose ids are first .. first+n-1 (8-byte big endian)."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(first, first + n):
        span = scope.spans.add(name="op", span_id=i.to_bytes(8, "big"),
                               trace_id=(i + 1).to_bytes(16, "big"))
        span.attributes.add(key="i").value.int_value = i
    return Batch.of(request)


def span_ids(batch: Batch) -> list[int]:
    return [int.from_bytes(s.span_id, "big") for _r, sc in iter_scopes(Signal.TRACES, batch.message)
            for s in sc.spans]


class ScriptedExporter(Exporter):
    """Calls `behaviour(attempt_number)` on every export: raise to fail, return to accept."""

    def __init__(self, behaviour: Callable[[int], object] | None = None, delay: float = 0.0,
                 gate: asyncio.Event | None = None):
        self.behaviour = behaviour or (lambda n: None)
        self.delay = delay
        self.gate = gate  # when set, every export waits for it
        self.attempts: list[float] = []
        self.received: Counter[int] = Counter()

    async def export(self, batch: Batch) -> None:
        self.attempts.append(time.monotonic())
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.behaviour(len(self.attempts))
        self.received.update(span_ids(batch))


def counter_value(metrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name + "_total", labels)
    return value or 0.0
