"""OTLP/JSON encoding (the OTLP spec's JSON mapping: lowerCamelCase keys, hex trace/span ids,
integer enums, 64-bit integers as strings or numbers). Not a hot-path codec."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from google.protobuf import json_format

from otelflow.pdata import Request, Signal

_ID_LENGTHS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


class OTLPJSONError(ValueError):
    """The JSON is not a valid OTLP request (message says where)."""


def encode(message: Request) -> dict[str, Any]:
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    _walk_ids(data, _b64_to_hex)
    return data


def dumps(message: Request) -> str:
    return json.dumps(encode(message), separators=(",", ":"))


def decode(signal: Signal, data: Any) -> Request:
    """Build a request from decoded JSON (a dict), validating id lengths."""
    if not isinstance(data, dict):
        raise OTLPJSONError("an OTLP/JSON request must be a JSON object")
    _walk_ids(data, _hex_to_b64)
    message = signal.request_type()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OTLPJSONError(str(exc)) from None
    return message


def loads(signal: Signal, text: str | bytes) -> Request:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OTLPJSONError(f"invalid JSON: {exc}") from None
    return decode(signal, data)


def _walk_ids(node: Any, convert) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_LENGTHS and isinstance(value, str):
                node[key] = convert(key, value)
            elif isinstance(value, dict | list):
                _walk_ids(value, convert)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _walk_ids(item, convert)


def _b64_to_hex(_key: str, value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_to_b64(key: str, value: str) -> str:
    if not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OTLPJSONError(f"{key} {value!r} is not hex") from None
    if len(raw) != _ID_LENGTHS[key]:
        raise OTLPJSONError(f"{key} must be {_ID_LENGTHS[key]} bytes "
                            f"({2 * _ID_LENGTHS[key]} hex digits), got {len(raw)}")
    return binascii.b2a_base64(raw, newline=False).decode()
