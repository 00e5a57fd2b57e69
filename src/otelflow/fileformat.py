"""The on-disk OTLP formats of the `file` exporter (also the fixture format for replay):
`json` = one OTLP/JSON request per line; `proto` = each serialized request prefixed with its
length as 4 bytes big-endian, as the Go file exporter writes them."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from otelflow import otlp_json
from otelflow.pdata import Request, Signal

Format = Literal["json", "proto"]
_LENGTH = struct.Struct(">I")
_JSON_KEYS = {"resourceSpans": Signal.TRACES, "resourceMetrics": Signal.METRICS,
              "resourceLogs": Signal.LOGS}


def encode_record(message: Request | None, fmt: Format, raw: bytes | None = None) -> bytes:
    """One record: a JSON line, or a length-prefixed protobuf (`raw` reuses existing bytes;
    `message` may then be None)."""
    if fmt == "json":
        return otlp_json.dumps(message).encode() + b"\n"
    data = raw if raw is not None else message.SerializeToString()
    return _LENGTH.pack(len(data)) + data


def signal_of_json(data: dict) -> Signal:
    for key, signal in _JSON_KEYS.items():
        if key in data:
            return signal
    raise ValueError("not an OTLP/JSON request: expected resourceSpans, resourceMetrics or "
                     "resourceLogs")


def read_records(path: str | Path, fmt: Format = "json",
                 signal: Signal | None = None) -> Iterator[tuple[Signal, Request]]:
    """Yield (signal, request) from a file. Proto files need `signal` (they do not say)."""
    path = Path(path)
    if fmt == "json":
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    sig = signal or signal_of_json(data)
                    yield sig, otlp_json.decode(sig, data)
                except (ValueError, otlp_json.OTLPJSONError) as exc:
                    raise ValueError(f"{path}:{lineno}: {exc}") from None
        return
    if signal is None:
        raise ValueError("reading a proto file needs the signal it holds")
    for raw in read_proto_frames(path):
        yield signal, signal.request_type.FromString(raw)


def read_proto_frames(path: str | Path) -> Iterator[bytes]:
    """The serialized requests of a length-prefixed proto file, read as a stream."""
    path = Path(path)
    with path.open("rb") as f:
        pos = 0
        while header := f.read(4):
            if len(header) < 4:
                raise ValueError(f"{path}: truncated length prefix at byte {pos}")
            (size,) = _LENGTH.unpack(header)
            data = f.read(size)
            if len(data) < size:
                raise ValueError(f"{path}: truncated record at byte {pos + 4}")
            yield data
            pos += 4 + size
