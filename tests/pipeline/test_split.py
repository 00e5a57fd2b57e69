"""`split_wire_by_trace_id`: the wire split groups items as the message split does, whatever
the order of spans and of the fields inside them."""

from __future__ import annotations

import zlib

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelflow.pdata import Signal
from otelflow.pipeline.split import split_by_trace_id, split_wire_by_trace_id
from otelflow.wire import tag_length


def field(number: int, payload: bytes) -> bytes:
    return tag_length(number << 3 | 2, len(payload)) + payload


def span_bytes(trace: int | None, name: str, trace_id_first: bool) -> bytes:
    tid = b"" if trace is None else field(1, trace.to_bytes(16, "big"))
    rest = field(2, zlib.crc32(name.encode()).to_bytes(8, "big")) + field(5, name.encode())
    return tid + rest if trace_id_first else rest + tid


def request() -> bytes:
    """Two resources; spans of traces 1-3 interleaved, some with the trace id written after
    other fields, one without a trace id."""
    order = [1, 2, 1, 3, 2, 2, None, 1, 3]
    resources = b""
    for service in ("a", "b"):
        spans = b"".join(field(2, span_bytes(t, f"{service}{i}", trace_id_first=i % 3 != 1))
                         for i, t in enumerate(order))
        scope = field(1, field(1, f"lib-{service}".encode())) + spans
        resource = field(1, field(1, field(1, f"svc-{service}".encode()))) + field(2, scope)
        resources += field(1, resource)
    return resources


def names(raw: bytes) -> list[tuple[str, str]]:
    req = ExportTraceServiceRequest.FromString(raw)
    return [(rs.resource.SerializeToString().decode(errors="replace"), span.name)
            for rs in req.resource_spans for ss in rs.scope_spans for span in ss.spans]


def test_wire_split_groups_like_the_message_split_in_any_field_order():
    raw = request()
    wire = {tid: names(part) for tid, part in split_wire_by_trace_id(Signal.TRACES, raw)}
    by_message = {tid: names(part.SerializeToString()) for tid, part in
                  split_by_trace_id(Signal.TRACES, ExportTraceServiceRequest.FromString(raw))}
    assert wire == by_message
    assert len(wire) == 4  # traces 1, 2, 3 and the span without a trace id
    assert [name for _, name in wire[b""]] == ["a6", "b6"]


def test_wire_split_by_key_keeps_every_span_once_in_order():
    raw = request()
    parts = split_wire_by_trace_id(Signal.TRACES, raw, key=lambda tid: len(tid) and tid[-1] % 2)
    assert sorted(n for _, part in parts for n in names(part)) == sorted(names(raw))
    odd = dict(parts)[1]
    assert [name for _, name in names(odd)] == ["a0", "a2", "a3", "a7", "a8",
                                                "b0", "b2", "b3", "b7", "b8"]
    assert Span.FromString(span_bytes(3, "x", False)).trace_id == (3).to_bytes(16, "big")
