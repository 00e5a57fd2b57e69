"""The exporter reliability chain: sending queue -> retry -> timeout -> send.

Config keys follow the Go collector's exporterhelper (`sending_queue`, `retry_on_failure`,
`timeout`). A slow exporter fills only its own queue; a full queue answers `RetryableError`
so receivers tell SDKs to back off.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Literal

import structlog
from pydantic import Field

from otelflow.component import Exporter, Host, PermanentError, RetryableError
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch
from otelflow.telemetry.metrics import SelfMetrics


class QueueSettings(ConfigModel):
    enabled: bool = True
    num_consumers: int = Field(10, ge=1)
    queue_size: int = Field(1000, ge=1)
    sizer: Literal["requests", "items"] = "requests"
    block_on_overflow: bool = False
    storage: str | None = None


class RetrySettings(ConfigModel):
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(0.5, ge=0, le=1)
    multiplier: float = Field(1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0  # 0 = retry forever


class ExporterSettings(ConfigModel):
    """Base for exporter configs: the keys every Go exporter shares."""

    timeout: Duration = 5.0
    sending_queue: QueueSettings = Field(default_factory=QueueSettings)
    retry_on_failure: RetrySettings = Field(default_factory=RetrySettings)


class Backoff:
    """Exponential backoff with jitter, as the Go collector's retry sender."""

    def __init__(self, settings: RetrySettings):
        self.settings = settings
        self.interval = settings.initial_interval

    def next_delay(self) -> float:
        s = self.settings
        delta = s.randomization_factor * self.interval
        delay = random.uniform(self.interval - delta, self.interval + delta)
        self.interval = min(self.interval * s.multiplier, s.max_interval)
        return delay


class ExporterChain:
    """Wraps an `Exporter` with its queue and retry loop; the service's consumer for it."""

    mutates_data = False

    def __init__(self, exporter: Exporter, settings: ExporterSettings | None, exporter_id: str,
                 metrics: SelfMetrics, logger=None):
        self.exporter = exporter
        self.settings = settings or ExporterSettings()
        self.id = exporter_id
        self.metrics = metrics
        self.log = logger or structlog.get_logger("otelflow").bind(exporter=exporter_id)
        self._queue: deque[Batch] = deque()
        self._queued_size = 0
        self._not_empty = asyncio.Event()
        self._space = asyncio.Event()
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task] = []
        self._in_flight = 0
        self._size_gauge, cap_gauge = metrics.queue_gauges(exporter_id)
        cap_gauge.set(self.settings.sending_queue.queue_size)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        await self.exporter.start(host)
        q = self.settings.sending_queue
        if q.enabled:
            self._workers = [asyncio.create_task(self._worker(), name=f"{self.id}-sender-{i}")
                             for i in range(q.num_consumers)]

    async def shutdown(self, deadline: float | None = None) -> None:
        """Stop taking data, drain the queue until `deadline` (monotonic), then close."""
        if self._workers:
            await self._drain(deadline)
            self._stopping.set()
            self._not_empty.set()
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
            if self._queue:
                n = sum(b.item_count() for b in self._queue)
                self.log.warning("shutdown left items in the queue", items=n)
                for b in self._queue:
                    self.metrics.dropped(self.id, b.signal, "shutdown", b.item_count())
                self._queue.clear()
        await self.exporter.shutdown()

    async def _drain(self, deadline: float | None) -> None:
        while (self._queue or self._in_flight) and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.02)

    # -- consume ------------------------------------------------------------------------

    def _size_of(self, batch: Batch) -> int:
        return batch.item_count() if self.settings.sending_queue.sizer == "items" else 1

    async def consume(self, batch: Batch) -> None:
        if not self._workers:
            await self._send_with_retry(batch, raise_errors=True)
            return
        q = self.settings.sending_queue
        size = self._size_of(batch)
        while self._queued_size + size > q.queue_size and self._queue:
            if not q.block_on_overflow:
                self.metrics.exporter_enqueue_failed(self.id, batch.signal, batch.item_count())
                raise RetryableError(f"sending queue of exporter {self.id} is full", 1.0)
            self._space.clear()
            await self._space.wait()
        self._queue.append(batch)
        self._queued_size += size
        self._size_gauge.set(self._queued_size)
        self._not_empty.set()

    async def _worker(self) -> None:
        while not self._stopping.is_set():
            if not self._queue:
                self._not_empty.clear()
                await self._not_empty.wait()
                continue
            batch = self._queue.popleft()
            self._queued_size -= self._size_of(batch)
            self._size_gauge.set(self._queued_size)
            self._space.set()
            self._in_flight += 1
            try:
                await self._send_with_retry(batch, raise_errors=False)
            finally:
                self._in_flight -= 1

    async def _send_with_retry(self, batch: Batch, raise_errors: bool) -> None:
        r = self.settings.retry_on_failure
        backoff = Backoff(r)
        started = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self.exporter.export(batch), self.settings.timeout or None)
                self.metrics.exporter_sent(self.id, batch.signal, batch.item_count())
                return
            except PermanentError as exc:
                self._failed(batch, "permanent_error", exc)
                if raise_errors:
                    raise
                return
            except (RetryableError, TimeoutError, OSError) as exc:
                error = exc if isinstance(exc, RetryableError) else RetryableError(repr(exc))
            delay = max(backoff.next_delay(), error.retry_after or 0.0)
            elapsed = time.monotonic() - started
            if not r.enabled or (r.max_elapsed_time and elapsed + delay > r.max_elapsed_time):
                self._failed(batch, "retries_exhausted" if r.enabled else "retry_disabled", error)
                if raise_errors:
                    raise error
                return
            self.log.info("export failed, will retry", error=str(error), delay=round(delay, 3))
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                self._failed(batch, "shutdown", error)
                return
            except TimeoutError:
                pass

    def _failed(self, batch: Batch, reason: str, exc: BaseException) -> None:
        n = batch.item_count()
        self.metrics.exporter_send_failed(self.id, batch.signal, n)
        self.metrics.dropped(self.id, batch.signal, reason, n)
        self.log.error("dropping data", reason=reason, error=str(exc), items=n)
