"""Signals and the `Batch` that carries them between components.

A batch wraps one OTLP export request (the protobuf message is the pdata). It also keeps the
wire bytes it was received as, so an exporter can forward them without re-serializing when no
processor changed the data. Readers use `batch.message`; writers call `batch.mutable()` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otelflow import _native
from otelflow.wire import WireError

Request = ExportTraceServiceRequest | ExportMetricsServiceRequest | ExportLogsServiceRequest


class Signal(StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def request_type(self) -> type[Request]:
        return _REQUEST_TYPES[self]

    @property
    def response_type(self) -> type:
        """Export*ServiceResponse (carries `partial_success`)."""
        return _RESPONSE_TYPES[self]

    @property
    def rejected_field(self) -> str:
        """The partial_success counter: rejected_spans / rejected_data_points / ..."""
        return _REJECTED[self]

    @property
    def resource_field(self) -> str:
        """`resource_spans` / `resource_metrics` / `resource_logs`."""
        return _LAYOUT[self][0]

    @property
    def scope_field(self) -> str:
        return _LAYOUT[self][1]

    @property
    def item_field(self) -> str:
        """`spans` / `metrics` / `log_records` (metrics count data points, see `count_items`)."""
        return _LAYOUT[self][2]

    @property
    def item_unit(self) -> str:
        """The noun the Go collector's self-metrics use: spans, metric_points, log_records."""
        return _UNITS[self]

    @classmethod
    def of(cls, message: Request) -> Signal:
        return _SIGNAL_OF[type(message)]


_REQUEST_TYPES = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
}
_RESPONSE_TYPES = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
}
_REJECTED = {Signal.TRACES: "rejected_spans", Signal.METRICS: "rejected_data_points",
             Signal.LOGS: "rejected_log_records"}
_SIGNAL_OF = {v: k for k, v in _REQUEST_TYPES.items()}
_LAYOUT = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
}
_UNITS = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}


def metric_points(metric: Any) -> Any:
    """The repeated data_points of a Metric, whatever its type (empty tuple when unset)."""
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind else ()


def count_items(signal: Signal, message: Request) -> int:
    """Spans, metric data points or log records in a request."""
    n = 0
    if signal is Signal.METRICS:  # inlined metric_points: this runs for every request
        for resource in message.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is not None:
                        n += len(getattr(metric, kind).data_points)
        return n
    item_field = signal.item_field
    for resource in getattr(message, signal.resource_field):
        for scope in getattr(resource, signal.scope_field):
            n += len(getattr(scope, item_field))
    return n


def count_items_wire(raw: bytes, signal: Signal) -> int:
    """Items of a serialized request, counted on the wire without parsing (in C): the item
    fields (2) of each scope (2) of each resource (1), and for metrics the data points of
    each metric as a parser holds them. Raises WireError on framing it cannot follow."""
    return _native.count_items(raw, signal is Signal.METRICS)


def iter_scopes(signal: Signal, message: Request) -> Iterator[tuple[Any, Any]]:
    """Yield (resource_x, scope_x) pairs of a request."""
    for resource in getattr(message, signal.resource_field):
        for scope in getattr(resource, signal.scope_field):
            yield resource, scope


class Metadata(Mapping[str, tuple[str, ...]]):
    """Request metadata ("client info" in the Go collector): the gRPC metadata or HTTP headers
    a receiver recorded with `include_metadata`, as lower-cased key -> tuple of values.

    Immutable and hashable, so batches can be grouped by it and share it freely.
    """

    __slots__ = ("_hash", "_map")

    def __init__(self, pairs: Iterable[tuple[str, str]] | Mapping[str, Iterable[str]] = ()):
        """From (key, value) pairs (a key may repeat: its values are kept in order) or from a
        mapping of key -> values. Keys are lower-cased."""
        grouped: dict[str, list[str]] = {}
        items = ((k, v) for k, vs in pairs.items() for v in vs) if isinstance(pairs, Mapping) \
            else pairs
        for key, value in items:
            grouped.setdefault(key.lower(), []).append(value)
        self._map = {k: tuple(v) for k, v in grouped.items()}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def values_of(self, key: str) -> tuple[str, ...]:
        """The values of `key`, looked up case-insensitively; () when absent (Go's
        `client.Metadata.Get`)."""
        return self._map.get(key.lower(), ())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Metadata):
            return self._map == other._map
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._map.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"Metadata({self._map!r})"


class Batch:
    """One OTLP export request travelling through a pipeline.

    `message` parses lazily and must be treated as read-only; call `mutable()` before changing
    anything, which drops the cached wire bytes. `to_bytes()` reuses the received bytes when
    nothing changed them. `metadata` is the request metadata recorded by the receiver (None
    when none was recorded); whoever builds a new batch out of an old one passes it on.
    """

    __slots__ = ("_items", "_message", "_raw", "metadata", "signal")

    def __init__(self, signal: Signal, message: Request | None = None, raw: bytes | None = None,
                 items: int | None = None, metadata: Metadata | None = None):
        """`items`, when the caller already knows the item count, saves counting again."""
        if message is None and raw is None:
            message = signal.request_type()
        self.signal = signal
        self._message = message
        self._raw = raw
        self._items = items
        self.metadata = metadata

    @classmethod
    def of(cls, message: Request, metadata: Metadata | None = None) -> Batch:
        return cls(Signal.of(message), message=message, metadata=metadata)

    @classmethod
    def from_bytes(cls, signal: Signal, raw: bytes) -> Batch:
        """Parse now (raising `google.protobuf.message.DecodeError`) and keep the bytes."""
        return cls(signal, message=signal.request_type.FromString(raw), raw=raw)

    @property
    def message(self) -> Request:
        if self._message is None:
            assert self._raw is not None
            self._message = self.signal.request_type.FromString(self._raw)
        return self._message

    def mutable(self) -> Request:
        """The message, for changing in place: the cached bytes and counts are dropped."""
        message = self.message
        self._raw = None
        self._items = None
        return message

    def replace(self, message: Request) -> None:
        """Swap in a different message of the same signal."""
        self._message = message
        self._raw = None
        self._items = None

    def to_bytes(self) -> bytes:
        if self._raw is None:
            self._raw = self.message.SerializeToString()
        return self._raw

    @property
    def unchanged_bytes(self) -> bytes | None:
        """The received wire bytes when nothing has changed the data since, else None."""
        return self._raw

    def item_count(self) -> int:
        """Items in the batch, counted on the wire while the received bytes hold the data
        (counting alone never parses), else on the message."""
        if self._items is None:
            if self._raw is not None:
                try:
                    self._items = count_items_wire(self._raw, self.signal)
                except WireError:  # a field kind the parser skips but the count does not know
                    self._items = count_items(self.signal, self.message)
            else:
                self._items = count_items(self.signal, self.message)
        return self._items

    def is_empty(self) -> bool:
        return not getattr(self.message, self.signal.resource_field)

    def copy(self) -> Batch:
        """A deep copy another consumer may change freely."""
        if self._message is None:
            return Batch(self.signal, raw=self._raw, items=self._items, metadata=self.metadata)
        clone = self.signal.request_type()
        clone.CopyFrom(self._message)
        return Batch(self.signal, message=clone, raw=self._raw, items=self._items,
                     metadata=self.metadata)

    def with_metadata(self, metadata: Metadata | None) -> Batch:
        """This batch when it already carries `metadata`, else a batch over the same data
        carrying it (the batch itself may be shared, so it is not changed)."""
        if metadata == self.metadata:
            return self
        return Batch(self.signal, message=self._message, raw=self._raw, items=self._items,
                     metadata=metadata)

    def __repr__(self) -> str:
        return f"Batch({self.signal.value}, items={self.item_count()})"


def split_request(signal: Signal, message: Request, max_items: int) -> list[Request]:
    """Split a request into requests of at most `max_items` items, keeping resource/scope
    grouping. Metrics split between metrics (a metric's points stay together)."""
    out: list[Request] = []
    current, room = signal.request_type(), max_items
    for resource in getattr(message, signal.resource_field):
        for scope in getattr(resource, signal.scope_field):
            items = list(getattr(scope, signal.item_field))
            while items:
                sizes = [len(metric_points(i)) if signal is Signal.METRICS else 1 for i in items]
                take, used = 0, 0
                # an item bigger than a whole request still goes alone into an empty one
                while take < len(items) and (
                        used + sizes[take] <= room or (take == 0 and room == max_items)):
                    used += sizes[take]
                    take += 1
                if take == 0:
                    out.append(current)
                    current, room = signal.request_type(), max_items
                    continue
                _append(signal, current, resource, scope, items[:take])
                items, room = items[take:], room - used
                if room <= 0:
                    out.append(current)
                    current, room = signal.request_type(), max_items
    if getattr(current, signal.resource_field):
        out.append(current)
    return out


def _append(signal: Signal, target: Request, resource: Any, scope: Any, items: list) -> None:
    """Add `items` under copies of `resource`/`scope` (merging into the last group if same)."""
    groups = getattr(target, signal.resource_field)
    if not groups or groups[-1].resource != resource.resource:
        new_res = groups.add()
        new_res.resource.CopyFrom(resource.resource)
        new_res.schema_url = resource.schema_url
    res = groups[-1]
    scopes = getattr(res, signal.scope_field)
    if not scopes or scopes[-1].scope != scope.scope:
        new_scope = scopes.add()
        new_scope.scope.CopyFrom(scope.scope)
        new_scope.schema_url = scope.schema_url
    getattr(scopes[-1], signal.item_field).extend(items)
