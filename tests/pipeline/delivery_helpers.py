"""Helpers shared by the delivery tests: batches with known span ids, a scripted exporter."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from prometheus_client.parser import text_string_to_metric_families

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


# -- end-to-end: collector configs, SDK senders, self-metrics ---------------------------------

FAST_RETRY = {"initial_interval": "100ms", "max_interval": "1s", "max_elapsed_time": "0"}


def collector_config(receiver_port: int, metrics_port: int, exporters: dict,
                     processors: dict | None = None, extensions: dict | None = None) -> str:
    """YAML for otlp receiver -> processors -> the given otlp exporters (traces pipeline)."""
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{receiver_port}"}}}},
        "exporters": exporters,
        "service": {
            "extensions": list(extensions or {}),
            "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": list(processors or {}),
                                     "exporters": list(exporters)}},
        },
    }
    if processors:
        config["processors"] = processors
    if extensions:
        config["extensions"] = extensions
    return yaml.safe_dump(config)


def otlp_exporter(port: int, **settings) -> dict:
    return {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}, "compression": "none",
            **settings}


def scrape(metrics_port: int) -> dict[tuple[str, frozenset], float]:
    """The collector's self-metrics: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_sum(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


class AckTrackingExporter(OTLPSpanExporter):
    """The SDK's OTLP gRPC exporter (with its retries), remembering every acknowledged span."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.acknowledged: list[bytes] = []
        self.failed: list[bytes] = []

    def export(self, spans):
        result = super().export(spans)
        ids = [s.context.span_id.to_bytes(8, "big") for s in spans]
        (self.acknowledged if result is SpanExportResult.SUCCESS else self.failed).extend(ids)
        return result


def sdk_tracer(port: int, **batch_settings):
    """(tracer provider, ack-tracking exporter) sending to a collector on `port`."""
    exporter = AckTrackingExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "delivery-test"}))
    settings = {"max_queue_size": 100_000, "max_export_batch_size": 500,
                "schedule_delay_millis": 50, **batch_settings}
    provider.add_span_processor(BatchSpanProcessor(exporter, **settings))
    return provider, exporter
