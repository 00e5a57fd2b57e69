"""Building blocks for component config models: strict base model, Go-style durations/sizes."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Go duration strings (`1m30s`, `200ms`) or plain numbers (seconds) to float seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s or 200ms")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 5s, 200ms, 1m30s")
    return total


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(value: Any) -> int:
    """Byte sizes: an int, or `512KiB`, `4MiB`, `1GB` style strings."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"invalid size {value!r}: expected bytes or e.g. 4MiB")
    unit = (match.group(2) or "").lower()
    factor = _SIZE_FACTOR[unit[:1]]
    if "i" in unit:
        factor = 1024 ** (list(_SIZE_FACTOR).index(unit[:1]) - 1)
    return int(float(match.group(1)) * factor)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds as float; accepts Go duration strings."""


def millisecond_args(*pairs: tuple[str, float | None]) -> list[tuple[str, int]]:
    """gRPC channel arguments (in ms) for the (argument, seconds) pairs that are set."""
    return [(arg, int(seconds * 1000)) for arg, seconds in pairs if seconds is not None]


ByteSize = Annotated[int, BeforeValidator(parse_size)]


class ConfigModel(BaseModel):
    """Base of every component config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


class EmptyConfig(ConfigModel):
    """For components that take no settings."""
