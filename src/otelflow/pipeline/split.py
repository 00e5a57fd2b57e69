"""Splitting OTLP requests without leaving protobuf (no dict conversions): by trace id (as
messages or on the wire bytes) and by resource. Used by exporters that key their messages
(kafka, loadbalancing); `pdata.split_request` splits by size.

Resources, scopes and schema urls are copied into each part; items are copied once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from typing import Any

from otelflow.pdata import Request, Signal
from otelflow.wire import WireError, field_at, fields, tag_length, trace_id_at


def _layout(signal: Signal) -> tuple[str, str, str]:
    return signal.resource_field, signal.scope_field, signal.item_field


def _new_scope(signal: Signal, request: Request, resource: Any, scope: Any) -> Any:
    """Append a resource_x/scope_x pair (copying resource, scope, schema urls) to `request`."""
    rfield, sfield, _ = _layout(signal)
    new_resource = getattr(request, rfield).add()
    new_resource.resource.CopyFrom(resource.resource)
    new_resource.schema_url = resource.schema_url
    new_scope = getattr(new_resource, sfield).add()
    new_scope.scope.CopyFrom(scope.scope)
    new_scope.schema_url = scope.schema_url
    return new_scope


def group_items(signal: Signal, request: Request,
                key: Callable[[Any], Hashable]) -> list[tuple[Hashable, Request]]:
    """(key, request holding only the items with that key), in first-seen key order.

    `key` maps a span / metric / log record to its group. A request whose items all share
    one key is returned as is (no copy).
    """
    rfield, sfield, ifield = _layout(signal)
    groups: list[tuple[Any, Any, dict[Hashable, list[Any]]]] = []
    keys: dict[Hashable, None] = {}
    for resource in getattr(request, rfield):
        for scope in getattr(resource, sfield):
            by_key: dict[Hashable, list[Any]] = {}
            for item in getattr(scope, ifield):
                by_key.setdefault(key(item), []).append(item)
            keys.update(dict.fromkeys(by_key))
            groups.append((resource, scope, by_key))
    if len(keys) <= 1:
        return [(next(iter(keys), None), request)]
    out: dict[Hashable, Request] = {k: signal.request_type() for k in keys}
    for resource, scope, by_key in groups:
        for k, items in by_key.items():
            getattr(_new_scope(signal, out[k], resource, scope), ifield).extend(items)
    return list(out.items())


def _trace_id(item: Any) -> bytes:
    return item.trace_id


def split_by_trace_id(signal: Signal, request: Request) -> list[tuple[bytes, Request]]:
    """(trace id, request holding only that trace's spans / log records).

    Items without a trace id share the key b"".
    """
    return [(tid or b"", part) for tid, part in group_items(signal, request, _trace_id)]


def resource_key(resource: Any) -> bytes:
    """A 16-byte hash of a resource's attributes, independent of their order."""
    digest = hashlib.blake2b(digest_size=16)
    for kv in sorted(resource.resource.attributes, key=lambda kv: kv.key):
        digest.update(kv.SerializeToString(deterministic=True))
    return digest.digest()


def split_by_resource(signal: Signal, request: Request,
                      key: Callable[[Any], Hashable] = resource_key
                      ) -> list[tuple[Hashable, Request]]:
    """(key(resource_x), request holding the resources with that key); default key: a hash
    of the resource attributes."""
    resources = getattr(request, signal.resource_field)
    keys = [key(resource) for resource in resources]
    if len(set(keys)) <= 1:
        return [(keys[0] if keys else None, request)]
    out: dict[Hashable, Request] = {}
    for k, resource in zip(keys, resources, strict=True):
        part = out.setdefault(k, signal.request_type())
        getattr(part, signal.resource_field).add().CopyFrom(resource)
    return list(out.items())


# -- wire level: split serialized requests by trace id without building messages ---------

# the field number of the trace id inside a span (1) / a log record (9)
_TRACE_ID_FIELD = {Signal.TRACES: 1, Signal.LOGS: 9}


def split_wire_by_trace_id(signal: Signal, raw: bytes,
                           key: Callable[[bytes], Hashable] | None = None
                           ) -> list[tuple[Hashable, bytes]]:
    """(trace id, serialized request holding only that trace) from a serialized traces or
    logs request, slicing the wire bytes: items are never parsed or re-encoded, resource and
    scope fields are copied as bytes. Same grouping as `split_by_trace_id`.

    With `key`, items are grouped by `key(trace id)` instead (e.g. the worker owning it).
    """
    tid_field = _TRACE_ID_FIELD[signal]
    # per group: list of (resource header, scope header, [item fields])
    parts: dict[Hashable, list[tuple[bytes, bytes, list[bytes]]]] = {}
    for field, _wire, _begin, rstart, rend in fields(raw, 0, len(raw)):
        if field != 1:
            continue
        rhead, scopes = [], []
        for rfield, _rwire, rbegin, sstart, send in fields(raw, rstart, rend):
            if rfield == 2:
                scopes.append((sstart, send))
            else:
                rhead.append(raw[rbegin:send])
        resource_header = b"".join(rhead)
        for sstart, send in scopes:
            shead, by_trace = _scope_items(raw, sstart, send, tid_field, key)
            scope_header = b"".join(shead)
            for tid, items in by_trace.items():
                parts.setdefault(tid, []).append((resource_header, scope_header, items))
    if len(parts) <= 1:
        return [(next(iter(parts), b"" if key is None else key(b"")), raw)]
    return [(tid, _assemble(groups)) for tid, groups in parts.items()]


def _scope_items(raw: bytes, start: int, end: int, tid_field: int,
                 key: Callable[[bytes], Hashable] | None,
                 ) -> tuple[list[bytes], dict[Hashable, list[bytes]]]:
    """(the scope's other fields, its item fields by group) of the ScopeSpans/ScopeLogs in
    raw[start:end]. A trace id written first (as SDKs write spans) is read in place; the
    key of a run of items of one trace is computed once."""
    head: list[bytes] = []
    by_trace: dict[Hashable, list[bytes]] = {}
    last_tid: bytes | None = None
    group: list[bytes] = []
    pos = start
    while pos < end:
        begin = pos
        number, wire_type, istart, pos = field_at(raw, pos)
        if pos > end:
            raise WireError("field runs past the end of its message")
        if number != 2 or wire_type != 2:
            head.append(raw[begin:pos])
            continue
        tid = trace_id_at(raw, istart, pos, tid_field)
        if tid != last_tid:
            last_tid = tid
            group = by_trace.setdefault(tid if key is None else key(tid), [])
        group.append(raw[begin:pos])
    return head, by_trace


def _assemble(groups: list[tuple[bytes, bytes, list[bytes]]]) -> bytes:
    out = []
    for resource_header, scope_header, items in groups:
        scope = scope_header + b"".join(items)
        resource = resource_header + tag_length(0x12, len(scope)) + scope
        out.append(tag_length(0x0A, len(resource)) + resource)
    return b"".join(out)
