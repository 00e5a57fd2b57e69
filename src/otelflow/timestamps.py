"""Read and shift the timestamps of OTLP requests (replay pacing and `rebase_timestamps`).

Only non-zero timestamps move: an unset `start_time_unix_nano` or `observed_time_unix_nano`
stays unset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from otelflow.pdata import Request, Signal, iter_scopes, metric_points

_SPAN_FIELDS = ("start_time_unix_nano", "end_time_unix_nano")
_POINT_FIELDS = ("start_time_unix_nano", "time_unix_nano")
_LOG_FIELDS = ("time_unix_nano", "observed_time_unix_nano")


def _stamped(signal: Signal, message: Request) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """Every message carrying timestamps, with the names of its timestamp fields."""
    for _resource, scope in iter_scopes(signal, message):
        if signal is Signal.TRACES:
            for span in scope.spans:
                yield span, _SPAN_FIELDS
                for event in span.events:
                    yield event, ("time_unix_nano",)
        elif signal is Signal.METRICS:
            for metric in scope.metrics:
                for point in metric_points(metric):
                    yield point, _POINT_FIELDS
                    for exemplar in getattr(point, "exemplars", ()):
                        yield exemplar, ("time_unix_nano",)
        else:
            for record in scope.log_records:
                yield record, _LOG_FIELDS


def newest_timestamp(signal: Signal, message: Request) -> int:
    """The latest timestamp in a request (unix ns), 0 when it has none."""
    newest = 0
    for item, fields in _stamped(signal, message):
        for name in fields:
            value = getattr(item, name)
            if value > newest:
                newest = value
    return newest


def shift_timestamps(signal: Signal, message: Request, delta_ns: int) -> None:
    """Add `delta_ns` to every non-zero timestamp of `message`, in place."""
    if not delta_ns:
        return
    for item, fields in _stamped(signal, message):
        for name in fields:
            value = getattr(item, name)
            if value:
                setattr(item, name, max(0, value + delta_ns))
