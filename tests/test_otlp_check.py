"""otlp_check: the C walk refuses exactly what upb refuses, and exactly the requests whose
parsed ids have the wrong length."""

from __future__ import annotations

import random

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otelflow.otlp_check import InvalidIds, MalformedRequest, checked_batch, id_length_error
from otelflow.pdata import Signal

# mostly valid lengths, sometimes one off, so both outcomes are common
TRACE_ID = st.sampled_from([0, 16, 16, 16, 15, 17, 8, 1]).map(lambda n: b"\xab" * n)
SPAN_ID = st.sampled_from([0, 8, 8, 8, 7, 9, 16, 1]).map(lambda n: b"\x12" * n)
TEXT = st.text(alphabet="\x0a\x10\x12\x1ca", max_size=20)  # bytes that look like the framing


@st.composite
def traces(draw):
    request = Signal.TRACES.request_type()
    for _ in range(draw(st.integers(1, 2))):
        scope_spans = request.resource_spans.add().scope_spans
        for _ in range(draw(st.integers(0, 2))):
            spans = scope_spans.add().spans
            for _ in range(draw(st.integers(0, 4))):
                span = spans.add(trace_id=draw(TRACE_ID), span_id=draw(SPAN_ID),
                                 parent_span_id=draw(SPAN_ID), name=draw(TEXT))
                span.attributes.add(key=draw(TEXT)).value.string_value = draw(TEXT)
                for _ in range(draw(st.integers(0, 1))):
                    span.links.add(trace_id=draw(TRACE_ID), span_id=draw(SPAN_ID))
    return request


@st.composite
def logs(draw):
    request = Signal.LOGS.request_type()
    records = request.resource_logs.add().scope_logs.add().log_records
    for _ in range(draw(st.integers(0, 6))):
        records.add(trace_id=draw(TRACE_ID), span_id=draw(SPAN_ID),
                    body={"string_value": draw(TEXT)}, severity_text=draw(TEXT))
    return request


def plain_walk_is_valid(signal: Signal, request) -> bool:
    def ok(item, *names):
        return all(len(getattr(item, n)) in (0, 16 if n == "trace_id" else 8) for n in names)

    for resource in getattr(request, signal.resource_field):
        for scope in getattr(resource, signal.scope_field):
            for item in getattr(scope, signal.item_field):
                if signal is Signal.LOGS and not ok(item, "trace_id", "span_id"):
                    return False
                if signal is Signal.TRACES and not (
                        ok(item, "trace_id", "span_id", "parent_span_id")
                        and all(ok(link, "trace_id", "span_id") for link in item.links)):
                    return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.one_of(traces().map(lambda r: (Signal.TRACES, r)),
                 logs().map(lambda r: (Signal.LOGS, r))))
def test_agrees_with_a_plain_walk(case):
    signal, request = case
    raw = request.SerializeToString()
    try:
        batch = checked_batch(signal, raw)
        error = None
    except InvalidIds as exc:
        error = str(exc)
    assert (error is None) == plain_walk_is_valid(signal, request), error
    if error is None:
        assert batch.to_bytes() == raw


def test_names_the_first_bad_id():
    request = Signal.TRACES.request_type()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(trace_id=b"a" * 16, span_id=b"b" * 8)
    spans.add(trace_id=b"a" * 16, span_id=b"b" * 8).links.add(span_id=b"c" * 4)
    with pytest.raises(InvalidIds, match=r"^resource_spans\[0\].scope_spans\[0\].spans\[1\]"
                       r".links\[0\].span_id must be 8 bytes, got 4$"):
        checked_batch(Signal.TRACES, request.SerializeToString())


def test_a_repeated_id_counts_as_the_parser_keeps_it():
    """A bad id followed by a good one is what a parser keeps as good: accepted."""
    span = Signal.TRACES.request_type().resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = b"a" * 16
    raw = span.SerializeToString()
    request = b"\x0a" + bytes([len(raw) + 4 + 4]) + b"\x12" + bytes([len(raw) + 4 + 2]) \
        + b"\x12" + bytes([len(raw) + 4]) + b"\x0a\x02ab" + raw
    batch = checked_batch(Signal.TRACES, request)
    assert batch.message.resource_spans[0].scope_spans[0].spans[0].trace_id == b"a" * 16


def test_metrics_are_not_checked():
    request = Signal.METRICS.request_type()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.gauge.data_points.add().exemplars.add(trace_id=b"short")
    assert id_length_error(Signal.METRICS, request) is None
    checked_batch(Signal.METRICS, request.SerializeToString())


def upb_accepts(signal: Signal, raw: bytes) -> bool:
    try:
        signal.request_type.FromString(raw)
    except DecodeError:
        return False
    return True


def c_accepts(signal: Signal, raw: bytes) -> bool:
    try:
        checked_batch(signal, raw)
    except MalformedRequest:
        return False
    except InvalidIds:
        pass
    return True


def sample_requests() -> list[tuple[Signal, bytes]]:
    """Valid requests of every signal, with the field kinds the check tells apart."""
    traces = Signal.TRACES.request_type()
    span = traces.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"t" * 16, span_id=b"s" * 8, name="caf\u00e9 \U0001f600", kind=3,
        start_time_unix_nano=1, end_time_unix_nano=2)
    span.attributes.add(key="k").value.double_value = 1.5
    span.attributes.add(key="b").value.bytes_value = b"\xff\x00"
    span.attributes.add(key="n").value.kvlist_value.values.add(key="x").value.int_value = -3
    span.links.add(trace_id=b"l" * 16, span_id=b"m" * 8)
    span.status.message = "ok"
    metrics = Signal.METRICS.request_type()
    scope = metrics.resource_metrics.add().scope_metrics.add()
    histogram = scope.metrics.add(name="h").histogram.data_points.add(
        count=3, bucket_counts=[1, 2], explicit_bounds=[0.5], sum=1.0)
    histogram.exemplars.add(as_double=1.0, span_id=b"x" * 8)
    exponential = scope.metrics.add(name="e").exponential_histogram.data_points.add(scale=2)
    exponential.positive.bucket_counts.extend([1, 300, 2**40])
    scope.metrics.add(name="s").summary.data_points.add().quantile_values.add(quantile=0.5)
    logs = Signal.LOGS.request_type()
    record = logs.resource_logs.add().scope_logs.add().log_records.add(
        severity_number=9, trace_id=b"t" * 16, flags=1)
    record.body.array_value.values.add().string_value = "\u00fc"
    return [(Signal.TRACES, traces.SerializeToString()),
            (Signal.METRICS, metrics.SerializeToString()), (Signal.LOGS, logs.SerializeToString())]


def mutate(rnd: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rnd.randint(1, 3)):
        choice = rnd.random()
        at = rnd.randrange(len(data) + 1)
        if choice < 0.4 and data:
            data[min(at, len(data) - 1)] = rnd.choice([0x00, 0x01, 0x7F, 0x80, 0xC0, 0xED, 0xFF,
                                                      0x0B, 0x0C, 0x0E, rnd.randrange(256)])
        elif choice < 0.6:
            data[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        elif choice < 0.8:
            del data[at:at + rnd.randint(1, 4)]
        else:
            data = data[:at]
    return bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_refuses_exactly_what_upb_refuses(seed):
    """Mutated valid requests (flipped bytes, inserted and deleted runs, truncation)."""
    rnd = random.Random(seed)
    disagreements = []
    for signal, raw in sample_requests():
        for _ in range(1500):
            mutated = mutate(rnd, raw)
            if c_accepts(signal, mutated) != upb_accepts(signal, mutated):
                disagreements.append((signal, mutated.hex()))
    assert not disagreements, disagreements[:5]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x0a\x05\x12\x01", "length past the end"),
    (b"\x0a\x03\x12\x01\xff", "truncated varint"),
    (b"\x0a\x05\x12\x03\x0a\x01\xff", None),  # scope bytes: not a string field
    (b"\x0a\x04\x1b\x00\x01\x1c", None),  # field number 0 in an unknown group: upb skips it
    (b"\x0e", "invalid wire type"),
    (b"\x02\x00", "invalid field number"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "varint longer than allowed"),
    (b"\x0b\x08\x01", "group without its end-group tag"),
    (b"\x0c", "end-group tag without its start"),
])
def test_reasons(raw, reason):
    if reason is None:
        assert c_accepts(Signal.TRACES, raw) == upb_accepts(Signal.TRACES, raw)
        return
    assert not upb_accepts(Signal.TRACES, raw)
    with pytest.raises(MalformedRequest, match=reason):
        checked_batch(Signal.TRACES, raw)


@pytest.mark.parametrize("depth", [95, 96, 97, 98, 99])
def test_nesting_limit_is_upbs(depth):
    """A log body nested `depth` AnyValue/ArrayValue pairs deep, around upb's limit."""
    value = AnyValue(string_value="x")
    for _ in range(depth // 2):
        outer = AnyValue()
        outer.array_value.values.append(value)
        value = outer
    logs = Signal.LOGS.request_type()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.CopyFrom(value)
    for extra in range(3):  # and one or two levels more, through a kvlist
        raw = logs.SerializeToString()
        assert c_accepts(Signal.LOGS, raw) == upb_accepts(Signal.LOGS, raw), (depth, extra)
        body = logs.resource_logs[0].scope_logs[0].log_records[0].body
        wrapped = AnyValue()
        wrapped.kvlist_value.values.add(key="k").value.CopyFrom(body)
        body.CopyFrom(wrapped)
