"""OTLP `AnyValue` <-> Python values, for the few places that must build or read them
(parsed log lines, attribute actions, raw Kafka payloads, test helpers). Not a hot-path codec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def set_any(target: Any, value: Any) -> None:
    """Fill an `AnyValue` in place: str/bool/int/float/bytes, lists become arrays, mappings
    kvlists; None leaves it empty; anything else is stored as its `str()`."""
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        target.int_value = value
    elif kind is float:
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, Mapping):
        target.kvlist_value.SetInParent()
        set_attributes(target.kvlist_value.values, value)
    elif isinstance(value, list | tuple):
        array = target.array_value
        array.SetInParent()
        for item in value:
            set_any(array.values.add(), item)
    elif value is not None:
        target.string_value = str(value)


def set_attributes(target: Any, values: Mapping[str, Any]) -> None:
    """Append `values` to a repeated `KeyValue` field."""
    for key, value in values.items():
        if type(value) is str:
            target.add(key=str(key)).value.string_value = value
        else:
            set_any(target.add(key=str(key)).value, value)


def to_python(value: Any, bytes_as_hex: bool = False) -> Any:
    """An `AnyValue` as a Python value (str, bool, int, float, bytes, list, dict, None)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [to_python(v, bytes_as_hex) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: to_python(kv.value, bytes_as_hex) for kv in value.kvlist_value.values}
    if kind == "bytes_value" and bytes_as_hex:
        return value.bytes_value.hex()
    return getattr(value, kind)
