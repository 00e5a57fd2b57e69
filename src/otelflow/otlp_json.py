"""OTLP/JSON encoding (the OTLP spec's JSON mapping: lowerCamelCase keys, hex trace/span ids,
enums as integers or names, 64-bit integers as strings or numbers).

Decoding is direct: the dict from `json.loads` is translated, guided by tables compiled once
from the protobuf descriptors, into constructor keyword arguments, and the request is built by
one constructor call (the protobuf runtime, in C, builds the nested messages): ~5x faster than
`json_format.ParseDict` (bench/bench_otlp_json.py). It accepts what ParseDict accepts (JSON
and proto field names, unknown fields ignored, `null` meaning "not set"), except that base64
must be clean and enum names known. Errors name the offending field by its path, e.g.
`resourceSpans[0].scopeSpans[0].spans[3].traceId must be 16 bytes (32 hex digits), got 3`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from otelflow.pdata import Request, Signal

_ID_FIELDS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}


class OTLPJSONError(ValueError):
    """The JSON is not a valid OTLP request (message says where)."""


def encode(message: Request) -> dict[str, Any]:
    """The request as OTLP/JSON (what `json_format.MessageToDict(use_integers_for_enums=True)`
    gives, with hex ids): only set fields, 64-bit integers as strings."""
    return _message_encoder(message.DESCRIPTOR)(message)


def dumps(message: Request) -> str:
    return json.dumps(encode(message), separators=(",", ":"))


def decode(signal: Signal, data: Any) -> Request:
    """Build a request from decoded JSON (a dict), validating field types and id lengths."""
    if not isinstance(data, dict):
        raise OTLPJSONError("an OTLP/JSON request must be a JSON object")
    request_type = signal.request_type
    try:
        kwargs = _message_converter(request_type.DESCRIPTOR)(data)
    except _Invalid as exc:
        raise OTLPJSONError(exc.describe()) from None
    try:
        return request_type(**kwargs)
    except (ValueError, TypeError) as exc:  # e.g. an unpaired surrogate in a string
        raise OTLPJSONError(str(exc)) from None


def loads(signal: Signal, text: str | bytes) -> Request:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OTLPJSONError(f"invalid JSON: {exc}") from None
    return decode(signal, data)


# --- encoding ------------------------------------------------------------------------------

Encoder = Callable[[Any], Any]
_ENCODERS: dict[str, Encoder] = {}
_INT64_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
                FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
                FieldDescriptor.TYPE_SINT64}


def _message_encoder(descriptor: Descriptor) -> Encoder:
    """message -> dict of its set fields (`ListFields`, in C), compiled once per type."""
    encoder = _ENCODERS.get(descriptor.full_name)
    if encoder is not None:
        return encoder
    fields: dict[str, tuple[str, Encoder | None]] = {}

    def encode(message: Any) -> dict[str, Any]:
        out = {}
        for field, value in message.ListFields():
            name, conv = fields[field.name]
            out[name] = value if conv is None else conv(value)
        return out

    _ENCODERS[descriptor.full_name] = encode  # before the fields: messages may recurse
    for field in descriptor.fields:
        single = _single_encoder(descriptor, field)
        if field.is_repeated:
            single = _repeated_encoder(single)
        fields[field.name] = (field.json_name, single)
    return encode


def _repeated_encoder(single: Encoder | None) -> Encoder:
    if single is None:
        return list
    return lambda values: [single(value) for value in values]


def _single_encoder(descriptor: Descriptor, field: FieldDescriptor) -> Encoder | None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _message_encoder(field.message_type)
    if kind == FieldDescriptor.TYPE_BYTES:
        if field.name in _ID_FIELDS and descriptor.full_name.startswith("opentelemetry."):
            return bytes.hex
        return lambda value: base64.b64encode(value).decode()
    if kind in _INT64_TYPES:
        return str
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _encode_float
    return None  # strings, bools, enums (as numbers), 32-bit integers: as they are


def _encode_float(value: float) -> float | str:
    if value != value:
        return "NaN"
    if value in (_INFINITY, -_INFINITY):
        return "Infinity" if value > 0 else "-Infinity"
    return value


_INFINITY = float("inf")


# --- decoding ------------------------------------------------------------------------------

class _Invalid(Exception):
    """A bad value; the path is collected (innermost first) while the error unwinds."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def describe(self) -> str:
        path = "".join(reversed(self.path)).lstrip(".")
        return f"{path} {self.message}" if path else self.message


Converter = Callable[[Any], Any]
_CONVERTERS: dict[str, Converter] = {}


def _message_converter(descriptor: Descriptor) -> Converter:
    """dict (JSON object) -> constructor kwargs for `descriptor`'s message, compiled once."""
    converter = _CONVERTERS.get(descriptor.full_name)
    if converter is not None:
        return converter
    fields: dict[str, tuple[str, Converter | None]] = {}
    oneofs = {f.name: o.name for o in descriptor.oneofs if not _is_synthetic(o)
              for f in o.fields}

    def convert(data: Any) -> dict[str, Any]:
        if type(data) is not dict:
            raise _Invalid(f"must be a JSON object, got {_kind(data)}")
        out = {}
        for key, value in data.items():
            field = fields.get(key)
            if field is None or value is None:
                continue
            name, conv = field
            if conv is None:  # string: the common case, no call
                if type(value) is not str:
                    exc = _Invalid(f"must be a string, got {_kind(value)}")
                    exc.path.append("." + key)
                    raise exc
                out[name] = value
                continue
            try:
                out[name] = conv(value)
            except _Invalid as exc:
                exc.path.append("." + key)
                raise
        if oneofs and len(out) > 1:
            _check_oneofs(out, oneofs)
        return out

    fast = _FAST_PATHS.get(descriptor.full_name)
    if fast is not None:
        convert = fast(convert)
    _CONVERTERS[descriptor.full_name] = convert  # before the fields: messages may recurse
    for field in descriptor.fields:
        entry = (field.name, _field_converter(descriptor, field))
        fields[field.json_name] = fields[field.name] = entry
    return convert


def _fast_any_value(generic: Converter) -> Converter:
    """Attributes dominate: a lone string value skips the generic loop."""
    def convert(data: Any) -> Any:
        if type(data) is dict and len(data) == 1:
            value = data.get("stringValue")
            if type(value) is str:
                return {"string_value": value}
        return generic(data)

    return convert


def _fast_key_value(generic: Converter) -> Converter:
    def convert(data: Any) -> Any:
        if type(data) is dict and len(data) == 2:
            key, value = data.get("key"), data.get("value")
            if type(key) is str and type(value) is dict:
                try:
                    return {"key": key, "value": _CONVERTERS[_ANY_VALUE](value)}
                except _Invalid as exc:
                    exc.path.append(".value")
                    raise
        return generic(data)

    return convert


_ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
_FAST_PATHS = {_ANY_VALUE: _fast_any_value,
               "opentelemetry.proto.common.v1.KeyValue": _fast_key_value}


def _is_synthetic(oneof) -> bool:
    """proto3 `optional` fields sit in a one-field synthetic oneof named `_<field>`."""
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def _check_oneofs(out: dict[str, Any], oneofs: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for name in out:
        group = oneofs.get(name)
        if group is None:
            continue
        if group in seen:
            raise _Invalid(f"sets both {seen[group]} and {name} of oneof {group!r}")
        seen[group] = name


def _field_converter(descriptor: Descriptor, field: FieldDescriptor) -> Converter | None:
    single = _single_converter(descriptor, field)
    if not field.is_repeated:
        return single
    return _repeated(single)


def _single_converter(descriptor: Descriptor, field: FieldDescriptor) -> Converter | None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return None
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _message_converter(field.message_type)
    if kind == FieldDescriptor.TYPE_BYTES:
        if field.name in _ID_FIELDS and descriptor.full_name.startswith("opentelemetry."):
            return _hex_id(_ID_FIELDS[field.name])
        return _base64
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum(field.enum_type)
    if kind == FieldDescriptor.TYPE_BOOL:
        return _bool
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _float
    return _integer(*_INT_RANGES[kind])


def _repeated(single: Converter | None) -> Converter:
    def convert(value: Any) -> list:
        if type(value) is not list:
            raise _Invalid(f"must be a JSON array, got {_kind(value)}")
        if single is None:
            if all(type(item) is str for item in value):
                return value
            check = _string
        else:
            check = single
        try:
            return [check(item) for item in value]
        except _Invalid:
            pass
        for index, item in enumerate(value):  # again, to name the element
            try:
                check(item)
            except _Invalid as exc:
                exc.path.append(f"[{index}]")
                raise
        raise AssertionError("unreachable")

    return convert


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: f"the string {value!r}",
            bool: f"{str(value).lower()}"}.get(type(value), repr(value))


def _string(value: Any) -> str:
    if type(value) is not str:
        raise _Invalid(f"must be a string, got {_kind(value)}")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Invalid(f"must be true or false, got {_kind(value)}")
    return value


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(1 << 31), 1 << 31),
    FieldDescriptor.TYPE_SINT32: (-(1 << 31), 1 << 31),
    FieldDescriptor.TYPE_SFIXED32: (-(1 << 31), 1 << 31),
    FieldDescriptor.TYPE_UINT32: (0, 1 << 32),
    FieldDescriptor.TYPE_FIXED32: (0, 1 << 32),
    FieldDescriptor.TYPE_INT64: (-(1 << 63), 1 << 63),
    FieldDescriptor.TYPE_SINT64: (-(1 << 63), 1 << 63),
    FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), 1 << 63),
    FieldDescriptor.TYPE_UINT64: (0, 1 << 64),
    FieldDescriptor.TYPE_FIXED64: (0, 1 << 64),
}


def _integer(low: int, high: int) -> Converter:
    def convert(value: Any) -> int:
        if type(value) is not int:
            value = _parse_integer(value)
        if low <= value < high:
            return value
        raise _Invalid(f"{value} is out of range [{low}, {high - 1}]")

    return convert


def _parse_integer(value: Any) -> int:
    """Integers arrive as numbers or (64-bit ones) as decimal strings; 1e3 and 5.0 are
    integers too (as json_format accepts them)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and " " not in value:
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    raise _Invalid(f"must be an integer, got {_kind(value)}")


_SPECIAL_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _float(value: Any) -> float:
    kind = type(value)
    if kind is float or kind is int:
        return value
    if kind is str:
        special = _SPECIAL_FLOATS.get(value)
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    raise _Invalid(f"must be a number, got {_kind(value)}")


_URLSAFE = str.maketrans("-_", "+/")


def _base64(value: Any) -> bytes:
    if type(value) is not str:
        raise _Invalid(f"must be a base64 string, got {_kind(value)}")
    try:  # both alphabets, padding optional (as json_format), but no stray characters
        padded = value.translate(_URLSAFE) + "=" * (-len(value) % 4)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(f"{value!r} is not base64") from None


def _hex_id(length: int) -> Converter:
    def convert(value: Any) -> bytes:
        if type(value) is not str:
            raise _Invalid(f"must be a hex string, got {_kind(value)}")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
        if raw is None or len(value) != 2 * len(raw):  # fromhex skips spaces
            raise _Invalid(f"{value!r} is not hex")
        if len(raw) == length or not raw:
            return raw
        raise _Invalid(f"must be {length} bytes ({2 * length} hex digits), got {len(raw)}")

    return convert


def _enum(enum_type) -> Converter:
    numbers = {value.name: value.number for value in enum_type.values}

    def convert(value: Any) -> int:
        if type(value) is int:
            if -(1 << 31) <= value < 1 << 31:
                return value
        elif type(value) is str:
            number = numbers.get(value)
            if number is not None:
                return number
            raise _Invalid(f"{value!r} is not a {enum_type.name} (one of {', '.join(numbers)})")
        raise _Invalid(f"must be a {enum_type.name} name or number, got {_kind(value)}")

    return convert
