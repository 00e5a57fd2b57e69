"""The exporter reliability chain: sending queue -> retry -> timeout -> send.

Config keys and defaults follow the Go collector's exporterhelper (`sending_queue`,
`retry_on_failure`, `timeout`). Every exporter sits behind its own bounded queue, in memory or
on disk (`sending_queue.storage: <file_storage id>`), drained by `num_consumers` senders that
retry with exponential backoff. A slow exporter fills only its own queue; a full queue answers
`RetryableError` (or blocks the caller with `block_on_overflow`), so receivers tell SDKs to
back off instead of dropping silently. Every drop is counted with its reason.

Shutdown (`ExporterChain.shutdown(deadline)`): refuse new data, keep sending what is queued
until the deadline, then stop. A memory queue drops (and counts) what is left; a persistent
queue stops retrying at once and keeps every unsent request on disk for the next start.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import Field

from otelflow.component import (
    Exporter,
    Host,
    Kind,
    PermanentError,
    PipelineError,
    RetryableError,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch, Metadata, Signal
from otelflow.telemetry.metrics import SelfMetrics

QUEUE_FULL_RETRY_AFTER = 1.0  # seconds a refused sender is told to wait


class QueueSettings(ConfigModel):
    enabled: bool = True
    num_consumers: int = Field(10, ge=1)
    queue_size: int = Field(1000, ge=1)
    sizer: Literal["requests", "items"] = "requests"
    block_on_overflow: bool = False
    storage: str | None = None  # id of a file_storage extension: the queue persists on disk


class RetrySettings(ConfigModel):
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(0.5, ge=0, le=1)
    multiplier: float = Field(1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0  # 0 = retry forever


class ExporterSettings(ConfigModel):
    """Base for exporter configs: the keys every Go exporter shares."""

    timeout: Duration = 5.0  # per attempt; 0 = no timeout
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


# -- queues ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Entry:
    """One queued request: the batch itself (memory) or its storage key (persistent)."""

    signal: Signal
    items: int
    size: int  # in units of the queue's sizer
    batch: Batch | None = None
    key: str | None = None


class QueueFullError(RetryableError):
    pass


class QueueClosedError(RetryableError):
    pass


class MemoryQueue:
    """Bounded FIFO of batches; `put` refuses or blocks when full, per the settings."""

    persistent = False

    def __init__(self, settings: QueueSettings, exporter_id: str):
        self.settings = settings
        self.exporter_id = exporter_id
        self._entries: deque[Entry] = deque()
        self.size = 0  # admitted units (including writes in progress), not those being sent
        lock = asyncio.Lock()
        self._not_empty = asyncio.Condition(lock)  # consumers wait here, woken one per put
        self._space = asyncio.Condition(lock)  # blocked producers (block_on_overflow) wait here
        self._closed = False

    def __len__(self) -> int:
        return len(self._entries)

    async def open(self) -> None:
        return None

    def entry_for(self, batch: Batch) -> Entry:
        items = batch.item_count()
        size = items if self.settings.sizer == "items" else 1
        return Entry(batch.signal, items, size, batch=batch)

    async def put(self, batch: Batch) -> None:
        entry = self.entry_for(batch)
        await self._reserve(entry.size)
        try:
            await self._store(entry, batch)
        except BaseException:
            await self._release(entry.size)
            raise
        async with self._not_empty:
            self._entries.append(entry)
            self._not_empty.notify()

    async def _reserve(self, size: int) -> None:
        async with self._space:
            while True:
                if self._closed:
                    raise QueueClosedError(f"exporter {self.exporter_id} is shutting down",
                                           QUEUE_FULL_RETRY_AFTER)
                # one request larger than the whole queue still goes in when the queue is empty
                if self.size == 0 or self.size + size <= self.settings.queue_size:
                    break
                if not self.settings.block_on_overflow:
                    raise QueueFullError(f"sending queue of exporter {self.exporter_id} is full",
                                         QUEUE_FULL_RETRY_AFTER)
                await self._space.wait()
            self.size += size

    async def _release(self, size: int) -> None:
        async with self._space:
            self.size -= size
            self._space.notify_all()

    async def _store(self, entry: Entry, batch: Batch) -> None:
        return None

    async def get(self) -> Entry | None:
        """The next entry, waiting for one; None once the queue is closed and empty."""
        async with self._not_empty:
            while not self._entries:
                if self._closed:
                    return None
                await self._not_empty.wait()
            entry = self._entries.popleft()
            self.size -= entry.size
            self._space.notify_all()
            return entry

    async def load(self, entry: Entry) -> Batch | None:
        return entry.batch

    async def done(self, entry: Entry) -> None:
        """The request was delivered or dropped: forget it."""
        entry.batch = None

    async def close(self) -> None:
        """Refuse new data and wake everyone waiting; queued entries stay until taken."""
        async with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()
            self._space.notify_all()

    def leftovers(self) -> list[Entry]:
        entries = list(self._entries)
        self._entries.clear()
        self.size = 0
        return entries


def _metadata_key(key: str) -> str:
    """Where the metadata of the request stored at `key` (`q/<seq>/...`) is: `m/<seq>`."""
    return "m/" + key.split("/")[1]


class PersistentQueue(MemoryQueue):
    """A `MemoryQueue` whose requests live in a storage client until the backend took them.

    `put` returns only once the request is committed; `done` deletes it. Keys encode what the
    index needs (`q/<seq>/<signal>/<items>`), so a restart rebuilds the queue from the keys
    alone and sends everything not yet deleted: at-least-once across crashes. A request's
    metadata (`Batch.metadata`) is written beside it, in the same commit, as `m/<seq>` (JSON),
    so `headers_setter` `from_context` still works after a restart.
    """

    persistent = True

    def __init__(self, settings: QueueSettings, exporter_id: str, client: Any):
        super().__init__(settings, exporter_id)
        self.client = client
        self._seq = itertools.count()
        self._with_metadata: set[str] = set()  # the `m/<seq>` keys stored

    async def open(self) -> None:
        self._with_metadata = set(await self.client.keys("m/"))
        last = -1
        for key in await self.client.keys("q/"):
            try:
                _, seq, signal, items = key.split("/")
                entry = Entry(Signal(signal), int(items), 0, key=key)
                last = max(last, int(seq, 16))
            except ValueError:
                continue
            entry.size = entry.items if self.settings.sizer == "items" else 1
            self._entries.append(entry)
            self.size += entry.size
        self._seq = itertools.count(last + 1)

    async def _store(self, entry: Entry, batch: Batch) -> None:
        entry.key = f"q/{next(self._seq):016x}/{entry.signal.value}/{entry.items}"
        # While consumers keep up, keep the request in memory too and skip reading it back;
        # a backlog beyond that lives on disk only, so memory stays bounded.
        if len(self._entries) >= 2 * self.settings.num_consumers:
            entry.batch = None
        sets = {entry.key: batch.to_bytes()}
        if batch.metadata is not None:
            key = _metadata_key(entry.key)
            sets[key] = json.dumps(dict(batch.metadata)).encode()
            self._with_metadata.add(key)
        await self.client.batch(sets=sets)

    async def load(self, entry: Entry) -> Batch | None:
        if entry.batch is not None:
            return entry.batch
        assert entry.key is not None
        raw = await self.client.get(entry.key)
        if raw is None:
            return None
        key = _metadata_key(entry.key)
        metadata = None
        if key in self._with_metadata:
            stored = await self.client.get(key)
            metadata = Metadata(json.loads(stored)) if stored is not None else None
        return Batch(entry.signal, raw=raw, metadata=metadata)

    async def done(self, entry: Entry) -> None:
        """Delete in the next group commit without waiting: a crash before it means a
        duplicate, never a loss."""
        entry.batch = None
        if entry.key is not None:
            deletes = [entry.key]
            key = _metadata_key(entry.key)
            if key in self._with_metadata:
                self._with_metadata.discard(key)
                deletes.append(key)
            self.client.submit(deletes=deletes).add_done_callback(self._delete_failed)

    def _delete_failed(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            structlog.get_logger("otelflow").warning(
                "could not delete a delivered request: it will be sent again after a restart",
                exporter=self.exporter_id, error=str(future.exception()))

    def leftovers(self) -> list[Entry]:
        return []  # they stay on disk


# -- retry ----------------------------------------------------------------------------------


class Outcome(enum.Enum):
    SENT = "sent"
    DROPPED = "dropped"
    INTERRUPTED = "interrupted"  # shutdown stopped the retries before the backend took it


class RetrySender:
    """Sends one request with retries (retry -> timeout -> export), counting the outcome."""

    def __init__(self, exporter: Exporter, settings: ExporterSettings, exporter_id: str,
                 metrics: SelfMetrics, log):
        self.exporter = exporter
        self.settings = settings
        self.id = exporter_id
        self.metrics = metrics
        self.log = log
        self.stop_retrying = asyncio.Event()

    async def send(self, batch: Batch, items: int, raise_errors: bool = False) -> Outcome:
        retry = self.settings.retry_on_failure
        backoff = Backoff(retry)
        started = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self.exporter.export(batch), self.settings.timeout or None)
                self.metrics.exporter_sent(self.id, batch.signal, items)
                return Outcome.SENT
            except PermanentError as exc:
                return self._drop(batch, items, "permanent_error", exc, raise_errors)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                error = RetryableError(f"export timed out after {self.settings.timeout}s")
            except Exception as exc:  # the Go helper retries every non-permanent error
                if raise_errors and not isinstance(exc, PipelineError | OSError):
                    self.metrics.exporter_send_failed(self.id, batch.signal, items)
                    raise  # a bug, and a caller waiting on it: let it see the bug itself
                error = exc if isinstance(exc, RetryableError) else RetryableError(repr(exc))
            delay = max(backoff.next_delay(), error.retry_after or 0.0)
            elapsed = time.monotonic() - started
            if not retry.enabled:
                return self._drop(batch, items, "retry_disabled", error, raise_errors)
            if retry.max_elapsed_time and elapsed + delay > retry.max_elapsed_time:
                return self._drop(batch, items, "retries_exhausted", error, raise_errors)
            self.log.info("export failed, will retry", error=str(error), delay=round(delay, 3))
            try:
                await asyncio.wait_for(self.stop_retrying.wait(), delay)
            except TimeoutError:
                continue
            if raise_errors:
                self.metrics.exporter_send_failed(self.id, batch.signal, items)
                raise error
            return Outcome.INTERRUPTED

    def _drop(self, batch: Batch, items: int, reason: str, exc: Exception,
              raise_errors: bool) -> Outcome:
        """Give up on a request: drop it (counted), or raise to a caller that waits (no queue).

        A waiting caller hands a retryable error back to its sender, who may retry: that is not
        a drop. A permanent error is one either way: no sender retries it.
        """
        if raise_errors and not isinstance(exc, PermanentError):
            self.metrics.exporter_send_failed(self.id, batch.signal, items)
            raise exc
        self.count_drop(batch.signal, reason, items)
        self.log.error("dropping data", reason=reason, error=str(exc), items=items)
        if raise_errors:
            raise exc
        return Outcome.DROPPED

    def count_drop(self, signal: Signal, reason: str, items: int) -> None:
        """A request given up for good: a failed send, and a drop with its reason."""
        self.metrics.exporter_send_failed(self.id, signal, items)
        self.metrics.dropped(self.id, signal, reason, items)


# -- the chain ------------------------------------------------------------------------------


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
        self.sender = RetrySender(exporter, self.settings, exporter_id, metrics, self.log)
        self.queue: MemoryQueue | None = None
        self._storage_client: Any = None
        self._workers: list[asyncio.Task] = []
        self._in_flight: set[Entry] = set()
        self._dropped_at_shutdown = 0  # items of interrupted memory-queue requests
        self._kept_at_shutdown = 0  # interrupted persistent-queue requests, still on disk
        self._size_gauge, cap_gauge = metrics.queue_gauges(exporter_id)
        cap_gauge.set(self.settings.sending_queue.queue_size)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        q = self.settings.sending_queue
        if q.enabled:
            self.queue = await self._open_queue(q, host)
            if len(self.queue):
                self.log.info("resuming persistent queue", requests=len(self.queue))
            self._size_gauge.set(self.queue.size)
        await self.exporter.start(host)
        if self.queue is not None:
            self._workers = [asyncio.create_task(self._worker(), name=f"{self.id}-sender-{i}")
                             for i in range(q.num_consumers)]

    async def _open_queue(self, q: QueueSettings, host: Host) -> MemoryQueue:
        if q.storage is None:
            return MemoryQueue(q, self.id)
        storage = host.extension(q.storage)
        if not hasattr(storage, "client"):
            raise ValueError(f"sending_queue.storage: extension {q.storage!r} is not a storage "
                             "extension (use a file_storage extension)")
        self._storage_client = await storage.client(Kind.EXPORTER, self.id)
        queue = PersistentQueue(q, self.id, self._storage_client)
        await queue.open()
        return queue

    async def shutdown(self, deadline: float | None = None) -> None:
        """Refuse new data, send what is queued until `deadline` (monotonic), then close."""
        queue = self.queue
        if queue is not None:
            await queue.close()
            if queue.persistent:
                self.sender.stop_retrying.set()  # unsent requests are safe on disk
            await self._drain(deadline)
            self.sender.stop_retrying.set()
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
            self._account_leftovers(queue)
            self.queue = None
        await self.exporter.shutdown()
        if self._storage_client is not None:
            await self._storage_client.close()
            self._storage_client = None

    async def _drain(self, deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._workers:
            await asyncio.wait(self._workers, timeout=timeout)

    def _account_leftovers(self, queue: MemoryQueue) -> None:
        leftovers = list(self._in_flight) + queue.leftovers()
        self._in_flight.clear()
        self._size_gauge.set(queue.size if queue.persistent else 0)
        if queue.persistent:
            kept = len(queue) + len(leftovers) + self._kept_at_shutdown
            if kept:
                self.log.info("unsent requests kept in the persistent queue", requests=kept)
            return
        for entry in leftovers:
            self.sender.count_drop(entry.signal, "shutdown", entry.items)
        dropped = self._dropped_at_shutdown + sum(e.items for e in leftovers)
        if dropped:
            self.log.warning("shutdown dropped unsent data", items=dropped)

    # -- consume ------------------------------------------------------------------------

    async def consume(self, batch: Batch) -> None:
        if self.queue is None:
            await self.sender.send(batch, batch.item_count(), raise_errors=True)
            return
        try:
            await self.queue.put(batch)
        except RetryableError:
            self.metrics.exporter_enqueue_failed(self.id, batch.signal, batch.item_count())
            raise
        except (OSError, RuntimeError) as exc:  # storage failure (disk full...): sender retries
            self.metrics.exporter_enqueue_failed(self.id, batch.signal, batch.item_count())
            raise RetryableError(f"exporter {self.id}: persistent queue write failed: {exc}",
                                 QUEUE_FULL_RETRY_AFTER) from exc
        self._size_gauge.set(self.queue.size)

    async def _worker(self) -> None:
        queue = self.queue
        assert queue is not None
        while (entry := await queue.get()) is not None:
            self._size_gauge.set(queue.size)
            self._in_flight.add(entry)
            try:
                await self._deliver(queue, entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a sender die with work in hand
                self.log.error("sending queue consumer failed", error=repr(exc),
                               kept_on_disk=queue.persistent)
                if not queue.persistent:
                    self.sender.count_drop(entry.signal, "internal_error", entry.items)
            self._in_flight.discard(entry)

    async def _deliver(self, queue: MemoryQueue, entry: Entry) -> None:
        batch = await queue.load(entry)
        if batch is None:
            self.sender.count_drop(entry.signal, "storage_error", entry.items)
            self.log.error("queued request missing from storage", key=entry.key)
            await queue.done(entry)
            return
        outcome = await self.sender.send(batch, entry.items)
        if outcome is Outcome.INTERRUPTED:
            if queue.persistent:
                self._kept_at_shutdown += 1
                return  # stays on disk for the next start
            self.sender.count_drop(entry.signal, "shutdown", entry.items)
            self._dropped_at_shutdown += entry.items
        await queue.done(entry)
