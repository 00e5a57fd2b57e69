"""`MemorySink`: an exporter that keeps what it gets, with finders for spans, metric points
and log records by name, attributes and resource attributes."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from otelflow.anyvalue import to_python
from otelflow.component import Exporter
from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.pdata import Batch, Signal, iter_scopes, metric_points
from otelflow.pipeline.service import Service

Matcher = Any  # a value to compare with ==, a compiled regex (searched) or a predicate


def any_value(value: Any) -> Any:
    """An OTLP `AnyValue` as a Python value (str, bool, int, float, bytes, list, dict, None)."""
    return to_python(value)


def attributes_dict(attributes: Any) -> dict[str, Any]:
    """Repeated `KeyValue` as a dict of Python values."""
    return {kv.key: to_python(kv.value) for kv in attributes}


def matches(expected: Matcher, actual: Any) -> bool:
    """`expected` is a predicate, a compiled regex (searched in str(actual)) or a value."""
    if isinstance(expected, re.Pattern):
        return actual is not None and expected.search(str(actual)) is not None
    if callable(expected):
        return bool(expected(actual))
    return expected == actual


_MISSING = object()


def _attributes_match(expected: Mapping[str, Matcher] | None, actual: dict[str, Any]) -> bool:
    if not expected:
        return True
    for key, want in expected.items():
        got = actual.get(key, _MISSING)
        if got is _MISSING or not matches(want, got):
            return False
    return True


@dataclass(frozen=True)
class Found:
    """One span, metric data point or log record, with its resource, scope (and metric).

    Attribute access falls through to the protobuf item: `span.status.code`, `point.count`,
    `log.severity_number`, `span.trace_id`.
    """

    signal: Signal
    item: Any
    resource: Any
    scope: Any
    metric: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.item, name)

    @property
    def name(self) -> str:
        """The span name, the metric name, or the log record's event_name."""
        if self.signal is Signal.METRICS:
            return self.metric.name
        return getattr(self.item, "event_name" if self.signal is Signal.LOGS else "name", "")

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_dict(self.item.attributes)

    @property
    def resource_attributes(self) -> dict[str, Any]:
        return attributes_dict(self.resource.resource.attributes)

    @property
    def body(self) -> Any:
        """A log record's body as a Python value."""
        return any_value(self.item.body)

    @property
    def value(self) -> Any:
        """A number point's value; histograms and summaries give their sum."""
        if self.item.DESCRIPTOR.name == "NumberDataPoint":
            return getattr(self.item, self.item.WhichOneof("value") or "as_double")
        return self.item.sum

    @property
    def duration_ms(self) -> float:
        """A span's duration in milliseconds."""
        return (self.item.end_time_unix_nano - self.item.start_time_unix_nano) / 1e6

    def __repr__(self) -> str:
        return f"Found({self.signal.value}, name={self.name!r}, attributes={self.attributes!r})"


def iter_found(signal: Signal, batches: list[Batch]) -> Iterator[Found]:
    for batch in batches:
        if batch.signal is not signal:
            continue
        for resource, scope in iter_scopes(signal, batch.message):
            if signal is Signal.METRICS:
                for metric in scope.metrics:
                    for point in metric_points(metric):
                        yield Found(signal, point, resource, scope, metric)
            else:
                for item in getattr(scope, signal.item_field):
                    yield Found(signal, item, resource, scope)


class MemorySink(Exporter):
    """An exporter keeping every batch it receives (tests swap real exporters for these); also
    a consumer (`consume`), to hand straight to a receiver under test.

    `fail_with` makes `export` raise that error (e.g. `RetryableError("down")`) until cleared.
    """

    mutates_data = False

    def __init__(self, name: str = "memory"):
        self.name = name
        self.batches: list[Batch] = []
        self.fail_with: BaseException | None = None
        self._arrived = asyncio.Event()

    async def export(self, batch: Batch) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(batch)
        self._arrived.set()

    consume = export

    async def wait_items(self, n: int, signal: Signal | None = None, timeout: float = 5.0) -> None:
        """Wait until at least `n` items (of `signal`) have arrived."""
        async with asyncio.timeout(timeout):
            while self.item_count(signal) < n:
                self._arrived.clear()
                await self._arrived.wait()

    def clear(self) -> None:
        self.batches.clear()

    def item_count(self, signal: Signal | str | None = None) -> int:
        """Spans + metric points + log records received (or only those of `signal`)."""
        sig = Signal(signal) if signal else None
        return sum(b.item_count() for b in self.batches if sig is None or b.signal is sig)

    def spans(self, name: Matcher = None, attributes: Mapping[str, Matcher] | None = None,
              resource: Mapping[str, Matcher] | None = None,
              where: Callable[[Found], bool] | None = None) -> list[Found]:
        """Spans whose name, attributes and resource attributes match (all if no filter)."""
        return self._find(Signal.TRACES, "name", name, attributes, resource, where)

    def metrics(self, name: Matcher = None, attributes: Mapping[str, Matcher] | None = None,
                resource: Mapping[str, Matcher] | None = None,
                where: Callable[[Found], bool] | None = None) -> list[Found]:
        """Metric data points (of every metric type) matching the metric name and the point's
        attributes; `Found.value` is the point's value, `Found.metric` its metric."""
        return self._find(Signal.METRICS, "name", name, attributes, resource, where)

    def logs(self, body: Matcher = None, attributes: Mapping[str, Matcher] | None = None,
             resource: Mapping[str, Matcher] | None = None,
             where: Callable[[Found], bool] | None = None) -> list[Found]:
        """Log records whose body, attributes and resource attributes match."""
        return self._find(Signal.LOGS, "body", body, attributes, resource, where)

    def _find(self, signal: Signal, field: str, wanted: Matcher, attributes, resource,
              where) -> list[Found]:
        out = []
        for found in iter_found(signal, self.batches):
            if wanted is not None and not matches(wanted, getattr(found, field)):
                continue
            if not _attributes_match(attributes, found.attributes):
                continue
            if not _attributes_match(resource, found.resource_attributes):
                continue
            if where is None or where(found):
                out.append(found)
        return out

    def __repr__(self) -> str:
        return f"MemorySink({self.name!r}, batches={len(self.batches)})"


class CaptureExporter(MemorySink):
    """A MemorySink whose `fail` callable may return an error to raise for a given batch;
    `calls` counts every attempt, failed ones included."""

    def __init__(self, fail: Callable[[Batch], BaseException | None] | None = None):
        super().__init__("capture")
        self.fail = fail
        self.calls = 0

    async def export(self, batch: Batch) -> None:
        self.calls += 1
        error = self.fail(batch) if self.fail else None
        if error is not None:
            raise error
        await super().export(batch)

    def items(self, signal: Signal | None = None) -> int:
        return self.item_count(signal)

    consume = export


@contextlib.asynccontextmanager
async def running_service(config_yaml: str, overrides: dict[str, Exporter] | None = None,
                          ) -> AsyncIterator[Service]:
    """Start a `Service` from YAML (`overrides`: exporter id -> exporter object), always shut
    it down."""
    raw, source = load_config(text=config_yaml)
    service = Service(parse_config(raw, source), exporter_overrides=overrides)
    await service.start()
    try:
        yield service
    finally:
        await service.shutdown()
