"""Split an OTLP ExportTraceServiceRequest by trace id at the protobuf wire level.

Holding parsed protobufs costs ~1 KiB per span; the wire bytes a quarter of that. So the
processor keeps, per trace, byte fragments: each is one `resource_spans` field (tag, length,
ResourceSpans) holding the resource, its scope(s) and only this trace's spans. Concatenated,
a trace's fragments are a valid ExportTraceServiceRequest, ready to parse for the decision or
to send on as they are.
"""

from __future__ import annotations

from collections.abc import Iterator

from otelflow.wire import WireError, fields, length_delimited, read_varint, tag_length, trace_id_at

# wire tags: (field number << 3) | wire type 2 (length-delimited)
RESOURCE_SPANS = 0x0A  # ExportTraceServiceRequest.resource_spans = 1
SCOPE_SPANS = 0x12  # ResourceSpans.scope_spans = 2
SPANS = 0x12  # ScopeSpans.spans = 2
TRACE_ID = 0x0A  # Span.trace_id = 1
PARENT_SPAN_ID = 4  # Span.parent_span_id field number


def span_is_root(b: bytes, start: int, end: int) -> bool:
    """True when the span encoded in b[start:end] has no parent_span_id."""
    for number, wire_type, _start, value, f_end in fields(b, start, end):
        if number == PARENT_SPAN_ID and wire_type == 2 and f_end > value:
            return False
    return True


Fragment = tuple[bytes, bytes, int, int, bool]
"""(trace id, data, body size, span count, has a root span): one trace's spans from one
ResourceSpans of a request; `data` is a `resource_spans` field, `body size` the ResourceSpans
message size (Go's ResourceSpansSize)."""


def split_by_trace(raw: bytes, find_roots: bool = False) -> Iterator[Fragment]:
    """One fragment per trace per ResourceSpans of an encoded ExportTraceServiceRequest."""
    for value, rs_end in length_delimited(raw, 0, len(raw), 1):
        yield from _split_resource(raw, value, rs_end, find_roots)


def _split_resource(b: bytes, start: int, end: int, find_roots: bool) -> Iterator[Fragment]:
    header: list[bytes] = []  # resource, schema_url (and unknown fields), kept for every trace
    scopes: list[tuple[bytes, dict[bytes, list]]] = []
    for number, wire_type, f_start, value, f_end in fields(b, start, end):
        if number == 2 and wire_type == 2:
            scopes.append(_split_scope(b, value, f_end, find_roots))
        else:
            header.append(b[f_start:f_end])
    head = b"".join(header)
    if len(scopes) == 1:  # the usual case: no merging across scopes needed
        scope_header, groups = scopes[0]
        for trace_id, (frames, count, root, size) in groups.items():
            prefix = tag_length(SCOPE_SPANS, len(scope_header) + size)
            body_size = len(head) + len(prefix) + len(scope_header) + size
            data = b"".join((tag_length(RESOURCE_SPANS, body_size), head, prefix, scope_header,
                             *frames))
            yield trace_id, data, body_size, count, root
        return
    by_trace: dict[bytes, list] = {}  # trace id -> [parts, span count, has root, size]
    for scope_header, groups in scopes:
        for trace_id, (frames, count, root, size) in groups.items():
            entry = by_trace.get(trace_id)
            if entry is None:
                entry = by_trace[trace_id] = [[], 0, False, 0]
            prefix = tag_length(SCOPE_SPANS, len(scope_header) + size)
            entry[0] += (prefix, scope_header, *frames)
            entry[1] += count
            entry[2] = entry[2] or root
            entry[3] += len(prefix) + len(scope_header) + size
    for trace_id, (parts, count, root, size) in by_trace.items():
        body_size = len(head) + size
        data = b"".join((tag_length(RESOURCE_SPANS, body_size), head, *parts))
        yield trace_id, data, body_size, count, root


def _split_scope(b: bytes, start: int, end: int,
                 find_roots: bool) -> tuple[bytes, dict[bytes, list]]:
    """(scope header, {trace id: [span frames, count, has root, their size]}) of a ScopeSpans."""
    header: list[bytes] = []
    groups: dict[bytes, list] = {}
    i = start
    while i < end:
        if b[i] != SPANS:
            _, _, f_start, _value, f_end = next(fields(b, i, end))
            header.append(b[f_start:f_end])
            i = f_end
            continue
        x = b[i + 1]  # inline the 1- and 2-byte length varints: nearly every span
        if x < 0x80:
            s, e = i + 2, i + 2 + x
        elif b[i + 2] < 0x80:
            s = i + 3
            e = s + ((x & 0x7F) | (b[i + 2] << 7))
        else:
            length, s = read_varint(b, i + 1)
            e = s + length
        if e > end:
            raise WireError("span runs past the end of its scope")
        if b[s] == TRACE_ID and b[s + 1] == 16 and e - s >= 18:
            trace_id = b[s + 2:s + 18]
        else:
            trace_id = trace_id_at(b, s, e)  # another layout: as a parser reads it
        group = groups.get(trace_id)
        if group is None:
            group = groups[trace_id] = [[b[i:e]], 1, False, e - i]
        else:
            group[0].append(b[i:e])
            group[1] += 1
            group[3] += e - i
        if find_roots and not group[2]:
            group[2] = span_is_root(b, s, e)
        i = e
    return b"".join(header), groups
