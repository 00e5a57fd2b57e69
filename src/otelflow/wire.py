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


def fields(b: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, field end) for each field in
    b[start:end]; a length-delimited field's value is b[value start:field end]."""
    i = start
    while i < end:
        key, j = read_varint(b, i)
        number, wire_type = key >> 3, key & 7
        value = j
        if wire_type == 2:
            length, value = read_varint(b, j)
            j = value + length
        elif wire_type == 0:
            _, j = read_varint(b, j)
        elif wire_type == 1:
            j += 8
        elif wire_type == 5:
            j += 4
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        if j > end:
            raise WireError("field runs past the end of its message")
        yield number, wire_type, i, value, j
        i = j
