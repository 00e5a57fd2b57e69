"""A thin consumer wrapper counting the items that pass (processor incoming/outgoing items)."""

from __future__ import annotations

from prometheus_client import Counter

from otelflow.component import Consumer
from otelflow.pdata import Batch


class CountingConsumer:
    """Counts `batch.item_count()` (cached on the batch when unchanged) into `counter`, then
    delegates. Exposes the wrapped consumer's `mutates_data` so fan-out copies stay right."""

    __slots__ = ("_count", "consumer", "mutates_data")

    def __init__(self, consumer: Consumer, counter: Counter):
        self.consumer = consumer
        self.mutates_data = bool(getattr(consumer, "mutates_data", False))
        self._count = counter.inc

    async def consume(self, batch: Batch) -> None:
        self._count(batch.item_count())
        await self.consumer.consume(batch)
