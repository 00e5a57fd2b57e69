"""The queue -> retry -> timeout chain with a scripted exporter: every outcome counted."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from otelflow.component import ComponentID, CreateSettings, Kind, PermanentError, RetryableError
from otelflow.config import ConfigErrors
from otelflow.config.service import parse_config
from otelflow.extensions.file_storage import FileStorage, FileStorageConfig
from otelflow.pdata import Metadata
from otelflow.pipeline.exporterhelper import (
    ExporterChain,
    ExporterSettings,
    PersistentQueue,
    QueueSettings,
)
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics
from tests.pipeline.delivery_helpers import ScriptedExporter, counter_value, spans_batch

FAST_RETRY = {"initial_interval": "20ms", "max_interval": "100ms", "randomization_factor": 0}


def settings(**overrides) -> ExporterSettings:
    raw = {"timeout": "0s", "retry_on_failure": dict(FAST_RETRY)}
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return ExporterSettings.model_validate(raw)


class Host:
    def __init__(self, **extensions):
        self.extensions = extensions

    def extension(self, cid):
        return self.extensions[cid]


def dropped(metrics, reason: str) -> float:
    return counter_value(metrics, "otelflow_dropped_items", component="otlp",
                         otel_signal="traces", reason=reason)


async def make_chain(exporter, cfg, metrics=None, host=None) -> ExporterChain:
    chain = ExporterChain(exporter, cfg, "otlp", metrics or SelfMetrics())
    await chain.start(host or Host())
    return chain


async def wait_until(predicate, timeout=5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_full_queue_refuses_with_retryable_error_and_counts():
    gate = asyncio.Event()
    exporter = ScriptedExporter(gate=gate)
    metrics = SelfMetrics()
    chain = await make_chain(exporter, settings(sending_queue={"num_consumers": 1,
                                                               "queue_size": 2}), metrics)
    await chain.consume(spans_batch(0, 5))  # taken by the consumer, blocked
    await wait_until(lambda: len(exporter.attempts) == 1)
    await chain.consume(spans_batch(5, 5))
    await chain.consume(spans_batch(10, 5))
    with pytest.raises(RetryableError, match="queue of exporter otlp is full") as info:
        await chain.consume(spans_batch(15, 5))
    assert info.value.retry_after == 1.0
    assert counter_value(metrics, "otelcol_exporter_enqueue_failed_spans", exporter="otlp") == 5
    gate.set()
    await chain.shutdown(time.monotonic() + 5)
    assert sorted(exporter.received) == list(range(15))
    assert all(n == 1 for n in exporter.received.values())
    assert counter_value(metrics, "otelcol_exporter_sent_spans", exporter="otlp") == 15


async def test_items_sizer_counts_spans_and_block_on_overflow_waits():
    gate = asyncio.Event()
    exporter = ScriptedExporter(gate=gate)
    chain = await make_chain(exporter, settings(sending_queue={
        "num_consumers": 1, "queue_size": 10, "sizer": "items", "block_on_overflow": True}))
    await chain.consume(spans_batch(0, 4))
    await wait_until(lambda: len(exporter.attempts) == 1)
    await chain.consume(spans_batch(4, 6))  # 6 of 10 items
    assert chain.queue.size == 6
    blocked = asyncio.create_task(chain.consume(spans_batch(10, 6)))  # 12 > 10: waits
    await asyncio.sleep(0.1)
    assert not blocked.done()
    gate.set()
    await asyncio.wait_for(blocked, 2)
    await chain.shutdown(time.monotonic() + 5)
    assert sorted(exporter.received) == list(range(16))


async def test_permanent_error_is_not_retried_and_is_counted():
    def fail(n):
        raise PermanentError("400 bad data")
    exporter = ScriptedExporter(fail)
    metrics = SelfMetrics()
    chain = await make_chain(exporter, settings(), metrics)
    await chain.consume(spans_batch(0, 7))
    await asyncio.sleep(0.2)
    await chain.shutdown(time.monotonic() + 1)
    assert len(exporter.attempts) == 1
    assert dropped(metrics, "permanent_error") == 7
    assert counter_value(metrics, "otelcol_exporter_send_failed_spans", exporter="otlp") == 7


async def test_retryable_error_backs_off_exponentially_then_delivers():
    def flaky(n):
        if n <= 4:
            raise RetryableError("503")
    exporter = ScriptedExporter(flaky)
    chain = await make_chain(exporter, settings(retry_on_failure={
        "initial_interval": "50ms", "multiplier": 2, "max_interval": "1s"}))
    await chain.consume(spans_batch(0, 3))
    await wait_until(lambda: exporter.received)
    await chain.shutdown(time.monotonic() + 1)
    gaps = [b - a for a, b in itertools.pairwise(exporter.attempts)]
    assert len(gaps) == 4
    for gap, expected in zip(gaps, (0.05, 0.1, 0.2, 0.4), strict=True):
        assert expected * 0.9 <= gap <= expected + 0.08, gaps
    assert exporter.received == {0: 1, 1: 1, 2: 1}


async def test_server_throttle_delay_wins_over_backoff():
    def throttled(n):
        if n == 1:
            raise RetryableError("429", retry_after=0.4)
    exporter = ScriptedExporter(throttled)
    chain = await make_chain(exporter, settings())
    await chain.consume(spans_batch(0, 1))
    await wait_until(lambda: exporter.received)
    await chain.shutdown(time.monotonic() + 1)
    assert 0.38 <= exporter.attempts[1] - exporter.attempts[0] <= 0.55


async def test_retries_exhausted_and_disabled_are_dropped_with_reason():
    def down(n):
        raise RetryableError("503")
    metrics = SelfMetrics()
    chain = await make_chain(ScriptedExporter(down), settings(retry_on_failure={
        "max_elapsed_time": "150ms"}), metrics)
    await chain.consume(spans_batch(0, 4))
    await wait_until(lambda: dropped(metrics, "retries_exhausted") == 4)
    await chain.shutdown(time.monotonic() + 1)
    chain = await make_chain(ScriptedExporter(down), settings(retry_on_failure={
        "enabled": False}), metrics)
    await chain.consume(spans_batch(0, 2))
    await wait_until(lambda: dropped(metrics, "retry_disabled") == 2)
    await chain.shutdown(time.monotonic() + 1)


async def test_timeout_per_attempt_is_retried():
    exporter = ScriptedExporter()

    async def slow_first(batch, original=exporter.export):
        exporter.delay = 0.3 if not exporter.attempts else 0
        await original(batch)
    exporter.export = slow_first
    chain = await make_chain(exporter, settings(timeout="100ms"))
    await chain.consume(spans_batch(0, 2))
    await wait_until(lambda: exporter.received)
    await chain.shutdown(time.monotonic() + 1)
    assert len(exporter.attempts) == 2


async def test_without_queue_errors_reach_the_caller():
    def fail(n):
        raise PermanentError("bad") if n == 1 else RetryableError("503")
    metrics = SelfMetrics()
    chain = await make_chain(ScriptedExporter(fail), settings(
        sending_queue={"enabled": False}, retry_on_failure={"max_elapsed_time": "100ms"}),
        metrics)
    with pytest.raises(PermanentError):
        await chain.consume(spans_batch(0, 1))
    with pytest.raises(RetryableError):  # after retrying for max_elapsed_time
        await chain.consume(spans_batch(1, 2))
    await chain.shutdown()
    assert counter_value(metrics, "otelcol_exporter_send_failed_spans", exporter="otlp") == 3
    assert dropped(metrics, "permanent_error") == 1  # no sender retries a permanent error
    assert dropped(metrics, "retries_exhausted") == 0  # the sender may retry this one


async def test_shutdown_drains_memory_queue_before_deadline():
    exporter = ScriptedExporter(delay=0.01)
    chain = await make_chain(exporter, settings(sending_queue={"num_consumers": 2}))
    for i in range(50):
        await chain.consume(spans_batch(i * 10, 10))
    queue = chain.queue
    await chain.shutdown(time.monotonic() + 10)
    assert sorted(exporter.received) == list(range(500))
    with pytest.raises(RetryableError, match="shutting down"):
        await queue.put(spans_batch(0, 1))


async def test_shutdown_deadline_drops_memory_leftovers_with_reason():
    def down(n):
        raise RetryableError("503")
    metrics = SelfMetrics()
    chain = await make_chain(ScriptedExporter(down), settings(sending_queue={"num_consumers": 2}),
                             metrics)
    for i in range(10):
        await chain.consume(spans_batch(i * 3, 3))
    started = time.monotonic()
    await chain.shutdown(started + 0.3)
    assert time.monotonic() - started < 1.0
    assert dropped(metrics, "shutdown") == 30
    assert counter_value(metrics, "otelcol_exporter_sent_spans", exporter="otlp") == 0


# -- persistent queue --------------------------------------------------------------------------


async def open_storage(directory) -> FileStorage:
    cfg = FileStorageConfig(directory=str(directory))
    storage = FileStorage(cfg, CreateSettings(ComponentID("file_storage"), Kind.EXTENSION,
                                              component_logger("extension", "file_storage"),
                                              SelfMetrics()))
    await storage.start(Host())
    return storage


async def test_persistent_queue_survives_restart_and_shutdown_interrupts_retries(tmp_path):
    def down(n):
        raise RetryableError("503")
    cfg = settings(sending_queue={"storage": "file_storage", "num_consumers": 3},
                   retry_on_failure={"initial_interval": "5s"})
    storage = await open_storage(tmp_path)
    metrics = SelfMetrics()
    first = ScriptedExporter(down)
    chain = await make_chain(first, cfg, metrics, Host(file_storage=storage))
    for i in range(20):
        await chain.consume(spans_batch(i * 5, 5))
    await wait_until(lambda: len(first.attempts) >= 3)
    started = time.monotonic()
    await chain.shutdown(started + 30)  # would wait 30 s with a memory queue
    assert time.monotonic() - started < 1.0
    assert dropped(metrics, "shutdown") == 0
    await storage.shutdown()

    storage = await open_storage(tmp_path)
    second = ScriptedExporter()
    chain = await make_chain(second, cfg, SelfMetrics(), Host(file_storage=storage))
    await wait_until(lambda: len(second.received) == 100)
    await chain.shutdown(time.monotonic() + 5)
    assert sorted(second.received) == list(range(100))
    assert all(n == 1 for n in second.received.values())
    client = await storage.client(Kind.EXPORTER, "otlp")
    assert await client.keys("q/") == []  # removed once the backend accepted
    await client.close()
    await storage.shutdown()


async def test_persistent_queue_keeps_request_metadata_across_restarts(tmp_path):
    storage = await open_storage(tmp_path)
    client = await storage.client(Kind.EXPORTER, "otlp")
    settings_ = QueueSettings(storage="file_storage")
    first = PersistentQueue(settings_, "otlp", client)
    await first.open()
    with_metadata = spans_batch(0, 2)
    with_metadata.metadata = Metadata({"x-tenant": ["acme"], "x-team": ["a", "b"]})
    await first.put(with_metadata)
    await first.put(spans_batch(2, 1))  # no metadata: none is stored
    assert await client.keys("m/") != [] and len(await client.keys("q/")) == 2

    second = PersistentQueue(settings_, "otlp", client)  # a restart: read back from disk
    await second.open()
    loaded = []
    for _ in range(2):
        entry = await second.get()
        loaded.append(await second.load(entry))
        await second.done(entry)
    assert [b.metadata for b in loaded] == [with_metadata.metadata, None]
    assert [b.item_count() for b in loaded] == [2, 1]
    await client.batch()  # the deletes were submitted before: committed by now
    assert await client.keys("m/") == [] and await client.keys("q/") == []
    await client.close()
    await storage.shutdown()


async def test_persistent_queue_bounds_and_refuses_when_full(tmp_path):
    storage = await open_storage(tmp_path)
    gate = asyncio.Event()
    exporter = ScriptedExporter(gate=gate)
    chain = await make_chain(exporter, settings(sending_queue={
        "storage": "file_storage", "num_consumers": 1, "queue_size": 3}),
        host=Host(file_storage=storage))
    for i in range(4):  # one in flight + 3 queued
        await chain.consume(spans_batch(i, 1))
        await wait_until(lambda: exporter.attempts)
    with pytest.raises(RetryableError, match="full"):
        await chain.consume(spans_batch(99, 1))
    gate.set()
    await chain.shutdown(time.monotonic() + 5)
    assert sorted(exporter.received) == [0, 1, 2, 3]
    await storage.shutdown()


async def test_storage_must_be_a_storage_extension():
    chain = ExporterChain(ScriptedExporter(), settings(sending_queue={"storage": "health"}),
                          "otlp", SelfMetrics())
    with pytest.raises(ValueError, match="not a storage extension"):
        await chain.start(Host(health=object()))


@pytest.mark.parametrize(("extensions", "enabled", "message"), [
    ({}, [], "extension 'file_storage' is not defined"),
    ({"file_storage": {"directory": "/tmp"}}, [], "is defined but not enabled"),
])
def test_queue_storage_must_be_an_enabled_extension(extensions, enabled, message):
    raw = {"receivers": {"otlp": None}, "extensions": extensions,
           "exporters": {"otlp": {"endpoint": "x:1", "sending_queue": {"storage": "file_storage"}}},
           "service": {"extensions": enabled,
                       "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp"]}}}}
    with pytest.raises(ConfigErrors) as info:
        parse_config(raw, "test.yaml")
    assert "exporters.otlp.sending_queue.storage" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(("queue", "key"), [
    ({"sizer": "bytes"}, "sending_queue.sizer"),
    ({"queue_size": 0}, "sending_queue.queue_size"),
    ({"num_consumers": 0}, "sending_queue.num_consumers"),
    ({"blocking": True}, "sending_queue.blocking"),
])
def test_bad_queue_settings_name_their_key(queue, key):
    raw = {"receivers": {"otlp": None},
           "exporters": {"otlp": {"endpoint": "x:1", "sending_queue": queue}},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp"]}}}}
    with pytest.raises(ConfigErrors) as info:
        parse_config(raw, "test.yaml")
    assert f"exporters.otlp.{key}" in str(info.value)


async def test_a_storage_write_failure_is_refused_retryably(tmp_path):
    storage = await open_storage(tmp_path)
    metrics = SelfMetrics()
    chain = await make_chain(ScriptedExporter(), settings(sending_queue={"storage": "file_storage"}),
                             metrics, Host(file_storage=storage))
    client = chain.queue.client
    await client._run(client._conn.execute, "PRAGMA query_only = ON")  # as if the disk failed
    with pytest.raises(RetryableError, match="persistent queue write failed"):
        await chain.consume(spans_batch(0, 3))
    assert chain.queue.size == 0
    assert counter_value(metrics, "otelcol_exporter_enqueue_failed_spans", exporter="otlp") == 3
    await chain.shutdown(time.monotonic() + 1)
    await storage.shutdown()
