"""Received OTLP requests checked on the wire, without parsing them.

A receiver must refuse what a protobuf parser refuses (gRPC INVALID_ARGUMENT, HTTP 400), and,
as the Go collector does, a request whose trace id is not 16 bytes or whose span id is not 8
(empty is fine). Parsing every request only to check it costs as much as the rest of a
passthrough pipeline, so the check is one walk in C (`_native.validate`) over tables built
here from the OTLP descriptors: framing, wire types, packed values, UTF-8 of string fields and
nesting depth as upb checks them, and the length of every id field of spans, links and log
records. An accepted request travels on as its received bytes and is parsed only where a
component reads it. Only when an id field has another length is the request parsed, and the
parsed request, which keeps the last of a repeated field, is walked to name the culprit.

Metric ids (exemplars) are not checked: nothing in otelflow relies on their lengths.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from otelflow import _native
from otelflow.pdata import Batch, Request, Signal

# field kinds of _native.validate
VARINT, FIXED64, FIXED32, BYTES, STRING, MESSAGE, ID16, ID8 = range(1, 9)
_KINDS = {
    FieldDescriptor.TYPE_STRING: STRING, FieldDescriptor.TYPE_BYTES: BYTES,
    FieldDescriptor.TYPE_MESSAGE: MESSAGE,
    FieldDescriptor.TYPE_DOUBLE: FIXED64, FieldDescriptor.TYPE_FIXED64: FIXED64,
    FieldDescriptor.TYPE_SFIXED64: FIXED64, FieldDescriptor.TYPE_FLOAT: FIXED32,
    FieldDescriptor.TYPE_FIXED32: FIXED32, FieldDescriptor.TYPE_SFIXED32: FIXED32,
    **dict.fromkeys((FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64,
                     FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
                     FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
                     FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM), VARINT),
}
_LENGTHS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
_ID_FIELDS = {  # the ids a receiver checks: message -> its id fields
    "opentelemetry.proto.trace.v1.Span": ("trace_id", "span_id", "parent_span_id"),
    "opentelemetry.proto.trace.v1.Span.Link": ("trace_id", "span_id"),
    "opentelemetry.proto.logs.v1.LogRecord": ("trace_id", "span_id"),
}


class MalformedRequest(ValueError):
    """Bytes a protobuf parser would refuse as the signal's export request."""


class InvalidIds(ValueError):
    """A trace id that is not 16 bytes or a span id that is not 8 (and not empty)."""


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # `label` is gone from newer protobufs
    return flag if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _schema() -> tuple[Any, dict[Signal, int]]:
    """The compiled tables of every message the export requests hold, and each request's."""
    index: dict[str, int] = {}
    tables: list[list[tuple[int, int, bool, int]]] = []

    def visit(message: Descriptor) -> int:
        if message.full_name in index:
            return index[message.full_name]
        number = index[message.full_name] = len(tables)
        tables.append([])
        ids = _ID_FIELDS.get(message.full_name, ())
        for field in message.fields:
            kind = (ID16 if _LENGTHS[field.name] == 16 else ID8) if field.name in ids \
                else _KINDS[field.type]
            sub = visit(field.message_type) if kind == MESSAGE else 0
            tables[number].append((field.number, kind, _repeated(field), sub))
        return number

    roots = {signal: visit(signal.request_type.DESCRIPTOR) for signal in Signal}
    return _native.compile_schema(tables), roots


_SCHEMA, _ROOTS = _schema()


def checked_batch(signal: Signal, raw: bytes) -> Batch:
    """The batch of a received request, unparsed; raises MalformedRequest or InvalidIds."""
    verdict = _native.validate(raw, _SCHEMA, _ROOTS[signal])
    if verdict == 0:
        return Batch(signal, raw=raw)
    if isinstance(verdict, str):
        raise MalformedRequest(verdict)
    batch = Batch.from_bytes(signal, raw)
    error = id_length_error(signal, batch.message)
    if error is not None:
        raise InvalidIds(error)
    return batch


def id_length_error(signal: Signal, message: Request) -> str | None:
    """Where a parsed request has an id of the wrong length, or None."""
    if signal is Signal.METRICS:
        return None
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


def _check(item: Any, where: str, fields: tuple[str, ...]) -> str | None:
    for name in fields:
        size = len(getattr(item, name))
        if size and size != _LENGTHS[name]:
            return f"{where}.{name} must be {_LENGTHS[name]} bytes, got {size}"
    return None
