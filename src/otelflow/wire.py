"""Protobuf wire-format primitives for the code that works on serialized OTLP requests
without parsing them (tail sampling's trace fragments, kafka's per-trace split, the
remote-write encoder)."""

from __future__ import annotations

from collections.abc import Iterator


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(b: bytes, i: int) -> tuple[int, int]:
    """(value, next index) of the varint at `i`."""
    result = shift = 0
    while True:
        try:
            x = b[i]
        except IndexError:
            raise WireError("truncated varint") from None
        i += 1
        result |= (x & 0x7F) << shift
        if x < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag_length(tag: int, n: int) -> bytes:
    """The tag and length prefix of a length-delimited field of `n` bytes."""
    if n < 0x80:
        return bytes((tag, n))
    if n < 0x4000:
        return bytes((tag, (n & 0x7F) | 0x80, n >> 7))
    return bytes((tag,)) + varint(n)


def field_at(b: bytes, i: int) -> tuple[int, int, int, int]:
    """(field number, wire type, value start, field end) of the field starting at b[i]; a
    length-delimited field's value is b[value start:field end]. One-byte tags and one- or
    two-byte lengths, nearly all of them in OTLP, skip the varint call."""
    try:
        tag = b[i]
        if tag < 0x80:
            i += 1
        else:
            tag, i = read_varint(b, i)
        wire = tag & 7
        if wire == 2:
            n = b[i]
            if n < 0x80:
                return tag >> 3, 2, i + 1, i + 1 + n
            high = b[i + 1]
            if high < 0x80:  # two-byte lengths: 128 B - 16 KiB
                n = (n & 0x7F) | high << 7
                return tag >> 3, 2, i + 2, i + 2 + n
            n, i = read_varint(b, i)
            return tag >> 3, 2, i, i + n
        if wire == 0:
            value = i
            while b[i] >= 0x80:
                i += 1
            return tag >> 3, 0, value, i + 1
    except IndexError:
        raise WireError("truncated field") from None
    if wire == 1 or wire == 5:
        return tag >> 3, wire, i, i + (8 if wire == 1 else 4)
    raise WireError(f"unsupported wire type {wire}")


def fields(b: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, field end) for each field in
    b[start:end]."""
    i = start
    while i < end:
        number, wire_type, value, j = field_at(b, i)
        if j > end:
            raise WireError("field runs past the end of its message")
        yield number, wire_type, i, value, j
        i = j


def trace_id_at(b: bytes, start: int, end: int, number: int = 1) -> bytes:
    """The trace id (bytes field `number`: 1 in a Span, 9 in a LogRecord) of the item in
    b[start:end], b"" when absent. Read in place when it is the item's first field with 16
    bytes, as SDKs write spans; otherwise the last occurrence, as a parser keeps it."""
    tag = number << 3 | 2
    if end - start >= 18 and b[start] == tag and b[start + 1] == 16:
        return b[start + 2:start + 18]
    trace_id = b""
    for field, wire_type, _, value, field_end in fields(b, start, end):
        if field == number and wire_type == 2:
            trace_id = b[value:field_end]
    return trace_id


def length_delimited(b: bytes, start: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    """(value start, end) of each length-delimited field numbered `wanted` in b[start:end]."""
    for number, wire_type, _, value, field_end in fields(b, start, end):
        if number == wanted and wire_type == 2:
            yield value, field_end
