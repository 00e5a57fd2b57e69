"""Splitting encoded trace requests by trace id at the wire level."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelflow.processors.tail_sampling.wire import span_is_root, split_by_trace
from otelflow.wire import WireError, tag_length
from tests.processors.tail_sampling.ts_builders import request, span, tid


def by_trace(raw: bytes, roots: bool = False) -> dict[bytes, tuple[ExportTraceServiceRequest,
                                                                    int, bool]]:
    out: dict[bytes, list] = {}
    for trace_id, data, body_size, count, root in split_by_trace(raw, roots):
        msg = ExportTraceServiceRequest.FromString(data)
        assert len(msg.resource_spans) == 1
        assert msg.resource_spans[0].ByteSize() == body_size
        entry = out.setdefault(trace_id, [b"", 0, False])
        entry[0] += data
        entry[1] += count
        entry[2] = entry[2] or root
    return {k: (ExportTraceServiceRequest.FromString(v[0]), v[1], v[2]) for k, v in out.items()}


def test_each_trace_keeps_its_resources_scopes_and_only_its_spans():
    req = request(span(1, 1), span(2, 1), span(1, 2, parent=1),
                  resource={"service.name": "a"}, scope={"lib.tag": "x"})
    second_scope = req.resource_spans[0].scope_spans.add()
    second_scope.scope.name = "other"
    second_scope.schema_url = "https://schema/1"
    second_scope.spans.append(span(1, 3, parent=1))
    req.resource_spans[0].schema_url = "https://schema/r"
    req.resource_spans.extend(request(span(2, 2, parent=1),
                                      resource={"service.name": "b"}).resource_spans)
    got = by_trace(req.SerializeToString(), roots=True)
    assert set(got) == {tid(1), tid(2)}
    one, count, root = got[tid(1)]
    assert (count, root) == (3, True)
    rs = one.resource_spans[0]
    assert rs.resource == req.resource_spans[0].resource
    assert rs.schema_url == "https://schema/r"
    assert [(ss.scope.name, ss.schema_url, [s.span_id[-1] for s in ss.spans])
            for ss in rs.scope_spans] == [("lib", "", [1, 2]), ("other", "https://schema/1", [3])]
    assert rs.scope_spans[0].scope == req.resource_spans[0].scope_spans[0].scope
    two, count, root = got[tid(2)]
    assert (count, root) == (2, True)
    assert [r.resource.attributes[0].value.string_value for r in two.resource_spans] == ["a", "b"]


def test_spans_are_byte_identical_after_the_split():
    original = request(*(span(t, s, parent=s - 1, attributes={"k": "v" * 200, "n": s})
                         for s in range(1, 4) for t in range(1, 4)))
    spans = {(s.trace_id, s.span_id): s for s in original.resource_spans[0].scope_spans[0].spans}
    got = by_trace(original.SerializeToString())
    seen = {(s.trace_id, s.span_id): s for msg, _, _ in got.values()
            for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert seen == spans


def test_trace_id_found_when_not_the_first_field():
    # hand-encode a span with name (field 5) before trace_id (field 1)
    body = tag_length(0x2A, 2) + b"op" + tag_length(0x0A, 16) + tid(9)
    inner_ss = tag_length(0x12, len(body)) + body
    rs_body = tag_length(0x12, len(inner_ss)) + inner_ss
    raw = tag_length(0x0A, len(rs_body)) + rs_body
    [(trace_id, data, _size, count, _root)] = list(split_by_trace(raw))
    assert (trace_id, count) == (tid(9), 1)
    assert ExportTraceServiceRequest.FromString(data).resource_spans[0].scope_spans[0].spans[
        0].name == "op"


def test_span_without_trace_id_groups_under_empty_id():
    req = request(Span(name="no-ids"))
    [(trace_id, *_rest)] = list(split_by_trace(req.SerializeToString()))
    assert trace_id == b""


def test_root_detection():
    child = span(1, 2, parent=1).SerializeToString()
    root = span(1, 1).SerializeToString()
    assert span_is_root(root, 0, len(root))
    assert not span_is_root(child, 0, len(child))


def test_truncated_input_is_a_wire_error():
    raw = request(span(1, 1)).SerializeToString()
    with pytest.raises(WireError):
        list(split_by_trace(raw[:-5]))
