"""The C loops of otelflow._native against what a parser and the Python code make of the same
bytes, including bytes that are not protobuf at all."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from otelflow import _native
from otelflow.exporters.prometheus_translation import STALE_BYTES, NumberSeries
from otelflow.pdata import Batch, Signal, count_items, count_items_wire
from otelflow.wire import WireError, tag_length

TS = 1_700_000_000_000_000_000
TIME = struct.pack("<Q", TS)


def field(number: int, payload: bytes) -> bytes:
    return tag_length(number << 3 | 2, len(payload)) + payload


def random_metric(rnd: random.Random) -> Metric:
    metric = Metric(name=f"m{rnd.randint(0, 3)}")
    kind = rnd.choice(["gauge", "sum", "histogram", "exponential_histogram", "summary", None])
    if kind is not None:
        data = getattr(metric, kind)
        data.SetInParent()
        for _ in range(rnd.randint(0, 4)):
            data.data_points.add(time_unix_nano=TS)
    return metric


@pytest.mark.parametrize("seed", range(20))
def test_metric_points_are_counted_as_the_parser_holds_them(seed):
    """Metrics glued from several serialized metrics (a parser merges a repeated data field
    and keeps only the last of the oneof's kinds), spread over resources and scopes."""
    rnd = random.Random(seed)
    resources = []
    for _ in range(rnd.randint(0, 3)):
        scopes = []
        for _ in range(rnd.randint(0, 3)):
            metrics = [b"".join(random_metric(rnd).SerializeToString()
                                for _ in range(rnd.randint(1, 3)))
                       for _ in range(rnd.randint(0, 4))]
            scopes.append(field(2, b"".join(field(2, m) for m in metrics)))
        resources.append(field(1, b"".join(scopes)))
    raw = b"".join(resources)
    parsed = ExportMetricsServiceRequest.FromString(raw)
    assert count_items_wire(raw, Signal.METRICS) == count_items(Signal.METRICS, parsed)
    batch = Batch(Signal.METRICS, raw=raw)
    assert batch.item_count() == count_items(Signal.METRICS, parsed)
    assert batch._message is None  # counting did not parse


def test_a_gauge_then_a_sum_counts_only_the_sum():
    gauge = Metric(name="x")
    gauge.gauge.data_points.add()
    gauge.gauge.data_points.add()
    total = Metric(name="x")
    total.sum.data_points.add()
    glued = gauge.SerializeToString() + total.SerializeToString() + field(1, b"y")
    raw = field(1, field(2, field(2, glued)))
    assert count_items_wire(raw, Signal.METRICS) == 1
    raw = field(1, field(2, field(2, gauge.SerializeToString() + field(1, b"y")
                                  + gauge.SerializeToString())))  # merged across the name
    assert count_items_wire(raw, Signal.METRICS) == 4


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_arbitrary_bytes_count_or_raise_a_wire_error(raw, metrics):
    try:
        n = _native.count_items(raw, metrics)
    except WireError:
        return
    assert n >= 0


def point(value_tag: int, value: bytes, rest: bytes, time: bytes = TIME) -> bytes:
    """A NumberDataPoint as SDKs lay it out: start time, time, value, then `rest`."""
    return field(1, b"\x11" + TIME + b"\x19" + time + bytes((value_tag,)) + value + rest)


def run_known(buf: bytes, cache: dict, time: bytes = TIME, last: int = 100):
    series: list = []
    values: list = []
    pos, index = _native.known_points(buf, 0, len(buf), -1, last, cache, time, series, values,
                                      STALE_BYTES)
    return pos, index, series, values


def test_known_points_take_known_series_and_stop_at_the_first_other_point():
    a, b = field(7, b"A"), field(7, b"B")
    cache = {a: NumberSeries(b"la", False), b: NumberSeries(b"lb", True), b"": None}
    points = [point(0x21, struct.pack("<d", 1.5), a), point(0x31, struct.pack("<q", -7), a),
              point(0x21, struct.pack("<d", 2.5), b)]
    known = b"".join(points)
    pos, index, series, values = run_known(known, cache)
    assert (pos, index) == (len(known), 2)
    assert [s.labels for s in series] == [b"la", b"la", b"lb"]
    assert values == [struct.pack("<d", 1.5), struct.pack("<d", -7.0), STALE_BYTES]
    stoppers = [
        point(0x21, struct.pack("<d", 1.0), field(7, b"C")),  # an unseen series
        point(0x21, struct.pack("<d", 1.0), b""),  # cached as None: read from the message
        point(0x21, struct.pack("<d", 1.0), a, time=struct.pack("<Q", TS + 1)),  # a new time
        point(0x29, struct.pack("<d", 1.0), a),  # not a double or an int value
        b"\x8a\x00" + known[1:],  # an over-long tag
    ]
    for stopper in stoppers:
        pos, index, series, _ = run_known(known[:len(points[0])] + stopper + known, cache)
        assert (pos, index, len(series)) == (len(points[0]), 0, 1)
    assert run_known(known, cache, last=1)[:2] == (len(points[0]) + len(points[1]), 1)
    assert run_known(known, cache, time=b"")[:2] == (0, -1)  # no run yet: Python starts it


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_known_points_never_read_past_the_buffer(tail):
    a = field(7, b"A")
    cache = {a: NumberSeries(b"la", False)}
    buf = point(0x21, struct.pack("<d", 1.0), a) + tail
    pos, index, series, _values = run_known(buf, cache)
    assert 0 <= pos <= len(buf) and index == len(series) - 1 >= 0


def test_number_entries_are_head_value_tail():
    one, two = NumberSeries(b"L1", False), NumberSeries(b"L2", True)
    labels, entries = _native.number_entries([one, two], [b"v" * 8, b"w" * 8], b"T")
    assert labels == [b"L1", b"L2"]
    assert entries == [one.entry_head + b"v" * 8 + b"T", two.entry_head + b"w" * 8 + b"T"]
    with pytest.raises(ValueError):
        _native.number_entries([one], [], b"")
