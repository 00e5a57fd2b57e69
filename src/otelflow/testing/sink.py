"""In-process test doubles: a capturing exporter and a service started from YAML text."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from otelflow.component import Exporter
from otelflow.config import load_config
from otelflow.config.service import parse_config
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.service import Service


class CaptureExporter(Exporter):
    """Keeps every batch it is given; `fail` (a callable returning an exception or None) lets a
    test inject errors per batch."""

    def __init__(self, fail: Callable[[Batch], BaseException | None] | None = None):
        self.batches: list[Batch] = []
        self.fail = fail
        self._arrived = asyncio.Event()

    async def export(self, batch: Batch) -> None:
        error = self.fail(batch) if self.fail else None
        if error is not None:
            raise error
        self.batches.append(batch)
        self._arrived.set()

    def items(self, signal: Signal | None = None) -> int:
        return sum(b.item_count() for b in self.batches if signal is None or b.signal is signal)

    async def wait_items(self, n: int, signal: Signal | None = None, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.items(signal) < n:
                self._arrived.clear()
                await self._arrived.wait()


@contextlib.asynccontextmanager
async def running_service(config_yaml: str, overrides: dict[str, Exporter] | None = None,
                          ) -> AsyncIterator[Service]:
    """Start a `Service` from YAML (`overrides`: exporter id -> exporter object), always shut
    it down."""
    raw, source = load_config(text=config_yaml)
    service = Service(parse_config(raw, source), exporter_overrides=overrides)
    await service.start()
    try:
        yield service
    finally:
        await service.shutdown()
