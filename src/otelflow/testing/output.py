"""Reading what a pipeline produced, for end-to-end tests: a `file` exporter's output, and
items in a comparable form."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from otelflow.fileformat import read_records
from otelflow.pdata import Request, Signal, count_items, iter_scopes


def read_output(path: str | Path, signal: Signal, expected: int, timeout: float = 20.0) -> list:
    """The requests of `signal` in a `file` exporter's JSON output once it holds `expected`
    items (or at the deadline); `timeout=0` reads once."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = [m for s, m in read_records(path) if s is signal] if path.exists() else []
        except ValueError:  # a line being written
            got = []
        if sum(count_items(signal, m) for m in got) >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def item_bytes(signal: Signal, messages: Iterable[Request]) -> list[bytes]:
    """Every span / metric / log record of `messages`, serialized deterministically and sorted:
    equal lists mean the same items arrived, whatever their batching."""
    return sorted(item.SerializeToString(deterministic=True) for m in messages
                  for _res, scope in iter_scopes(signal, m)
                  for item in getattr(scope, signal.item_field))
