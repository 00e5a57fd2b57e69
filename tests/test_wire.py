"""Protobuf wire primitives shared by the wire-level splitters and encoders."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otelflow.wire import (
    WireError,
    field_at,
    fields,
    read_varint,
    tag_length,
    trace_id_at,
    varint,
)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**35])
def test_varint_round_trip(value):
    assert read_varint(varint(value), 0) == (value, len(varint(value)))
    assert read_varint(tag_length(0x0A, value), 1)[0] == value


def test_fields_locate_values_of_every_wire_type():
    kv = KeyValue(key="k" * 200)
    kv.value.int_value = 300
    raw = kv.SerializeToString() + bytes((0x19,)) + bytes(8) + bytes((0x25,)) + bytes(4)
    found = list(fields(raw, 0, len(raw)))
    assert [(number, wire) for number, wire, *_ in found] == [(1, 2), (2, 2), (3, 1), (4, 5)]
    _, _, start, value, end = found[0]
    assert (start, raw[value:end]) == (0, b"k" * 200)
    assert found[-1][4] == len(raw)


@pytest.mark.parametrize("size", [0, 127, 128, 16383, 16384, 70000])
def test_field_at_reads_lengths_of_any_size(size):
    raw = tag_length(0x12, size) + b"x" * size + b"\x08\x01"
    assert field_at(raw, 0) == (2, 2, len(raw) - size - 2, len(raw) - 2)
    assert field_at(raw, len(raw) - 2) == (1, 0, len(raw) - 1, len(raw))


@pytest.mark.parametrize("raw", [b"\x0a\x05abc", b"\x0a", b"\x0f", b"\xff" * 11,
                                 b"\x0a\x80"])
def test_malformed_bytes_are_wire_errors(raw):
    with pytest.raises(WireError):
        list(fields(raw, 0, len(raw)))


def test_trace_id_at_reads_the_id_as_a_parser_keeps_it():
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    a, b = b"\x01" * 16, b"\x02" * 16
    first = tag_length(0x0A, 16) + a + tag_length(0x2A, 1) + b"n"  # trace id first
    later = tag_length(0x2A, 1) + b"n" + tag_length(0x0A, 16) + a
    twice = later + tag_length(0x0A, 16) + b  # repeated: the last one counts
    for raw in (first, later, twice, tag_length(0x2A, 1) + b"n"):
        assert trace_id_at(raw, 0, len(raw)) == Span.FromString(raw).trace_id
    record = LogRecord(trace_id=a, severity_number=9).SerializeToString()
    assert trace_id_at(record, 0, len(record), 9) == a
