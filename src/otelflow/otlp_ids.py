"""Trace/span id lengths of protobuf requests, checked without walking spans in Python.

The Go collector refuses a request whose trace id is not 16 bytes or whose span id is not 8
(empty is fine): gRPC INVALID_ARGUMENT, HTTP 400. Walking every span from Python costs as
much as parsing the request (each element access builds a wrapper object), so the check runs
mostly in C:

1. The request bytes are parsed again into a *shadow* schema that declares only the id fields
   (spans: trace_id, span_id, parent_span_id, links; log records: trace_id, span_id);
   everything else is skipped as unknown fields and discarded.
2. Each shadow scope is serialized; upb writes fields in number order and omits empty ids, so
   a scope is a run of `0x12 LEN BODY` records (one per span or log record) whose valid forms
   are few. One regular expression matches exactly a run of valid records: every alternative
   consumes LEN bytes, so it cannot drift off the record boundaries.
3. Only when that fails (a bad id, or a span with links) the parsed request is walked in
   Python, which names the culprit.

Cost (bench/results/perf.md): ~30% of the parse for 1,000 spans of 10 attributes, ~100% for
the testbed's tiny spans (vs ~100% and ~550% for a Python walk). Metrics are not checked: their
ids sit only in exemplars, deep in data points, and even detecting whether a request has any
exemplar (two shadow parses compared by size) cost ~90% of the parse; nothing in otelflow
relies on exemplar id lengths.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from otelflow.pdata import Request, Signal

_BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def _shadow_classes() -> dict[Signal, tuple[Any, Any]]:
    """(request, scope) message classes of the shadow schemas, per signal."""
    file = descriptor_pb2.FileDescriptorProto(name="otelflow_shadow_ids.proto",
                                              package="otelflow.shadow", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, str | None]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, type_name in fields:
            if type_name is None:
                proto.field.add(name=field_name, number=number, type=_BYTES, label=_OPTIONAL)
            else:
                proto.field.add(name=field_name, number=number, type=_MESSAGE, label=_REPEATED,
                                type_name=f".otelflow.shadow.{type_name}")

    message("Link", ("trace_id", 1, None), ("span_id", 2, None))
    message("Span", ("trace_id", 1, None), ("span_id", 2, None), ("parent_span_id", 4, None),
            ("links", 13, "Link"))
    message("ScopeSpans", ("spans", 2, "Span"))
    message("ResourceSpans", ("scope_spans", 2, "ScopeSpans"))
    message("Traces", ("resource_spans", 1, "ResourceSpans"))
    message("LogRecord", ("trace_id", 9, None), ("span_id", 10, None))
    message("ScopeLogs", ("log_records", 2, "LogRecord"))
    message("ResourceLogs", ("scope_logs", 2, "ScopeLogs"))
    message("Logs", ("resource_logs", 1, "ResourceLogs"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    classes = message_factory.GetMessageClassesForFiles([file.name], pool)
    return {Signal.TRACES: (classes["otelflow.shadow.Traces"],
                            classes["otelflow.shadow.ScopeSpans"]),
            Signal.LOGS: (classes["otelflow.shadow.Logs"], classes["otelflow.shadow.ScopeLogs"])}


_SHADOWS = _shadow_classes()


def _record_pattern(*fields: tuple[int, int]) -> re.Pattern[bytes]:
    """A run of `0x12 LEN BODY` records whose BODY is any subset, in order, of the given
    (tag, id length) fields, each with exactly its length."""
    alternatives = []
    for mask in range(1 << len(fields)):
        body = [(tag, size) for i, (tag, size) in enumerate(fields) if mask >> i & 1]
        length = sum(2 + size for _, size in body)
        parts = "".join(re.escape(bytes([tag, size]).decode("latin-1")) + f".{{{size}}}"
                        for tag, size in body)
        alternatives.append((length, re.escape(bytes([length]).decode("latin-1")) + parts))
    alternatives.sort(reverse=True)  # all ids first: the common case, tried first
    either = "|".join(pattern for _, pattern in alternatives)
    # possessive: records are self-delimiting, so backtracking could never help
    return re.compile(f"(?:\\x12(?:{either}))*+".encode("latin-1"), re.DOTALL)


_VALID_RUNS = {
    Signal.TRACES: _record_pattern((0x0A, 16), (0x12, 8), (0x22, 8)),
    Signal.LOGS: _record_pattern((0x4A, 16), (0x52, 8)),
}


def id_length_error(signal: Signal, raw: bytes, message: Request) -> str | None:
    """Why the request (`raw`, already parsed as `message`) has an id of the wrong length, or
    None when every non-empty trace id is 16 bytes and every span id 8."""
    if signal is Signal.METRICS:  # see the module docstring
        return None
    request_type, scope_type = _SHADOWS[signal]
    shadow = request_type.FromString(raw)
    shadow.DiscardUnknownFields()
    fullmatch = _VALID_RUNS[signal].fullmatch
    serialize = scope_type.SerializeToString
    for resource in getattr(shadow, signal.resource_field):
        for scope in getattr(resource, signal.scope_field):
            if fullmatch(serialize(scope)) is None:
                return _walk(signal, message)
    return None


def _walk(signal: Signal, message: Request) -> str | None:
    items = signal.item_field
    for r, resource in enumerate(getattr(message, signal.resource_field)):
        for s, scope in enumerate(getattr(resource, signal.scope_field)):
            for i, item in enumerate(getattr(scope, items)):
                where = f"{signal.resource_field}[{r}].{signal.scope_field}[{s}].{items}[{i}]"
                error = _check(item, where, ("trace_id", "span_id") if signal is Signal.LOGS
                               else ("trace_id", "span_id", "parent_span_id"))
                if error is None and signal is Signal.TRACES:
                    for k, link in enumerate(item.links):
                        error = _check(link, f"{where}.links[{k}]", ("trace_id", "span_id"))
                        if error:
                            break
                if error:
                    return error
    return None


_LENGTHS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}


def _check(item: Any, where: str, fields: tuple[str, ...]) -> str | None:
    for name in fields:
        size = len(getattr(item, name))
        if size and size != _LENGTHS[name]:
            return f"{where}.{name} must be {_LENGTHS[name]} bytes, got {size}"
    return None
