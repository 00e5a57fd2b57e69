"""`batch` processor: groups requests into batches of `send_batch_size` items or `timeout`.

Merging concatenates serialized requests (protobuf concatenation appends repeated fields), so
resource/scope grouping is kept and nothing is re-encoded; splitting above
`send_batch_max_size` copies only the items that move.

With `metadata_keys`, each distinct combination of those keys' values in the request metadata
(`Batch.metadata`, recorded by receivers with `include_metadata`) is batched apart, and its
batches carry that combination as their metadata (Go: one batcher per combination). Without
them, batches carry no metadata, as in Go.
"""

from __future__ import annotations

import asyncio

from pydantic import Field, field_validator, model_validator

from otelflow.component import (
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    PermanentError,
    PipelineError,
    Processor,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch, Metadata, split_request


class BatchConfig(ConfigModel):
    send_batch_size: int = Field(8192, ge=0)
    send_batch_max_size: int = Field(0, ge=0)
    timeout: Duration = 0.2
    metadata_keys: list[str] = Field(default_factory=list)
    metadata_cardinality_limit: int = Field(1000, ge=0)  # 0: no limit

    @field_validator("metadata_keys")
    @classmethod
    def _unique_keys(cls, keys: list[str]) -> list[str]:
        seen: set[str] = set()
        for key in keys:
            if key.lower() in seen:
                raise ValueError(f"duplicate entry in metadata_keys: {key.lower()!r} "
                                 "(case-insensitive)")
            seen.add(key.lower())
        return keys

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


class TooManyCombinations(PermanentError):
    """A request with a new combination of metadata values once the limit is reached."""


class _Shard:
    """The pending data of one metadata combination (the only one without metadata_keys)."""

    __slots__ = ("items", "metadata", "pending", "timer")

    def __init__(self, metadata: Metadata | None):
        self.metadata = metadata
        self.pending: list[Batch] = []
        self.items = 0
        self.timer: asyncio.TimerHandle | None = None


class BatchProcessor(Processor):
    def __init__(self, settings: CreateSettings, config: BatchConfig, next_consumer: Consumer):
        super().__init__(next_consumer)
        self.config = config
        self.id = str(settings.id)
        self.signal = settings.signal
        self.log = settings.logger
        self.metrics = settings.metrics
        self.metadata_keys = sorted(k.lower() for k in config.metadata_keys)
        self._single = _Shard(None)
        self._shards: dict[tuple[tuple[str, ...], ...], _Shard] = {}
        self._flushing: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()
        self._cardinality = None
        if self.metadata_keys:
            self._cardinality = self.metrics.gauge(
                "otelcol_processor_batch_metadata_cardinality",
                "Number of distinct metadata value combinations being processed",
                ("processor",)).labels(self.id)

    async def start(self, host: Host) -> None:
        return None

    def _shard_for(self, batch: Batch) -> _Shard:
        """The shard of the batch's metadata combination, created on first sight (a key the
        request lacks and a key with an empty value are different combinations, as in Go)."""
        if not self.metadata_keys:
            return self._single
        metadata = batch.metadata
        values = tuple(metadata.values_of(k) if metadata is not None else ()
                       for k in self.metadata_keys)
        shard = self._shards.get(values)
        if shard is None:
            limit = self.config.metadata_cardinality_limit
            if limit and len(self._shards) >= limit:
                raise TooManyCombinations(
                    f"too many batcher metadata-value combinations (metadata_cardinality_limit "
                    f"{limit} reached by processor {self.id})")
            shard = _Shard(Metadata({k: v for k, v in zip(self.metadata_keys, values, strict=True)
                                     if v}) or None)
            self._shards[values] = shard
            self._cardinality.set(len(self._shards))
        return shard

    async def consume(self, batch: Batch) -> None:
        n = batch.item_count()
        if n == 0:
            return
        shard = self._shard_for(batch)
        shard.pending.append(batch)
        shard.items += n
        if self.config.send_batch_size and shard.items >= self.config.send_batch_size:
            await self._flush(shard)
        elif shard.timer is None:
            loop = asyncio.get_running_loop()
            shard.timer = loop.call_later(self.config.timeout, self._on_timeout, shard)

    def _on_timeout(self, shard: _Shard) -> None:
        shard.timer = None
        task = asyncio.get_running_loop().create_task(self._flush(shard))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    @staticmethod
    def _take(shard: _Shard) -> Batch | None:
        if shard.timer is not None:
            shard.timer.cancel()
            shard.timer = None
        if not shard.pending:
            return None
        pending, items = shard.pending, shard.items
        shard.pending, shard.items = [], 0
        if len(pending) == 1:  # only the combination's keys go on (without metadata_keys: none)
            return pending[0].with_metadata(shard.metadata)
        return Batch(pending[0].signal, raw=b"".join(b.to_bytes() for b in pending), items=items,
                     metadata=shard.metadata)

    async def _flush(self, shard: _Shard) -> None:
        batch = self._take(shard)
        if batch is None:
            return
        limit = self.config.send_batch_max_size
        parts = [batch]
        if limit and batch.item_count() > limit:
            parts = [Batch(batch.signal, message=m, metadata=batch.metadata)
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
        for shard in [self._single, *self._shards.values()]:
            await self._flush(shard)
