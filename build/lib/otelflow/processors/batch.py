"""`batch` processor: groups requests into batches of `send_batch_size` items or `timeout`.

Merging concatenates serialized requests (protobuf concatenation appends repeated fields), so
resource/scope grouping is kept and nothing is re-encoded; splitting above
`send_batch_max_size` copies only the items that move.
"""

from __future__ import annotations

import asyncio

from pydantic import Field, model_validator

from otelflow.component import (
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    PipelineError,
    Processor,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch, split_request


class BatchConfig(ConfigModel):
    send_batch_size: int = Field(8192, ge=0)
    send_batch_max_size: int = Field(0, ge=0)
    timeout: Duration = 0.2

    @model_validator(mode="after")
    def _max_over_size(self) -> BatchConfig:
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be greater or equal to send_batch_size "
                             f"({self.send_batch_max_size} < {self.send_batch_size})")
        return self


def create(settings: CreateSettings, config: BatchConfig, next_consumer: Consumer) -> BatchProcessor:
    return BatchProcessor(settings, config, next_consumer)


FACTORY = Factory(Kind.PROCESSOR, "batch", BatchConfig, create,
                  description="Group data into batches by size or time")


class BatchProcessor(Processor):
    def __init__(self, settings: CreateSettings, config: BatchConfig, next_consumer: Consumer):
        super().__init__(next_consumer)
        self.config = config
        self.id = str(settings.id)
        self.signal = settings.signal
        self.log = settings.logger
        self.metrics = settings.metrics
        self._pending: list[Batch] = []
        self._pending_items = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    async def start(self, host: Host) -> None:
        return None

    async def consume(self, batch: Batch) -> None:
        n = batch.item_count()
        if n == 0:
            return
        self._pending.append(batch)
        self._pending_items += n
        if self.config.send_batch_size and self._pending_items >= self.config.send_batch_size:
            await self._flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.config.timeout, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    def _take(self) -> Batch | None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return None
        pending, items = self._pending, self._pending_items
        self._pending, self._pending_items = [], 0
        if len(pending) == 1:
            return pending[0]
        return Batch(pending[0].signal, raw=b"".join(b.to_bytes() for b in pending), items=items)

    async def _flush(self) -> None:
        batch = self._take()
        if batch is None:
            return
        limit = self.config.send_batch_max_size
        parts = [batch]
        if limit and batch.item_count() > limit:
            parts = [Batch(batch.signal, message=m)
                     for m in split_request(batch.signal, batch.message, limit)]
        async with self._lock:  # keep downstream order
            for part in parts:
                try:
                    await self.next_consumer.consume(part)
                except PipelineError as exc:
                    n = part.item_count()
                    self.metrics.dropped(self.id, part.signal, "downstream_error", n)
                    self.log.error("batch dropped: downstream refused it", error=str(exc), items=n)

    async def shutdown(self) -> None:
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self._flush()
