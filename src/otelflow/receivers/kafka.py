"""`kafka` receiver: consume OTLP (or raw log) messages from Kafka topics in a consumer group.

Go `kafkareceiver` keys. One aiokafka consumer serves every signal the receiver is used for
(topic -> signal routing). Offsets are committed by the receiver itself, never by aiokafka's
auto-commit of fetched positions: a message is *marked* before the pipeline sees it
(`message_marking.after: false`, the default, at-most-once) or only once the pipeline accepted
it (`after: true`, at-least-once: a crash or rebalance replays from the last mark). Marked
offsets are committed every `autocommit.interval` (or after every fetch when
`autocommit.enable: false`) and always before a partition is handed to another member.
An undecodable (poison) message is logged, counted and skipped.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import ConsumerStoppedError, KafkaError
from pydantic import Field, field_validator, model_validator

from otelflow.anyvalue import set_any
from otelflow.component import (
    Component,
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    PermanentError,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.kafka_common import DEFAULT_TOPICS, ClientSettings, decode_otlp
from otelflow.otlp_check import checked_batch
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.exporterhelper import Backoff, RetrySettings

_LOG_ONLY = ("raw", "text", "json")
TRANSPORT = "kafka"


def _check_encoding(value: str | None) -> str | None:
    if value is None or value in ("otlp_proto", "otlp_json", *_LOG_ONLY):
        return value
    if value.startswith("text_"):
        try:
            codecs.lookup(value[5:])
        except LookupError:
            raise ValueError(f"unknown text encoding {value[5:]!r} in {value!r}") from None
        return value
    raise ValueError(f"unsupported encoding {value!r}; valid encodings: otlp_proto, otlp_json, "
                     "and for logs raw, text, text_<charset>, json")


class SignalTopics(ConfigModel):
    """`traces|metrics|logs: {topics, encoding}` (`topic`: the older single-topic key)."""

    topics: list[str] | None = None
    topic: str | None = None
    encoding: str | None = None

    _encoding = field_validator("encoding")(classmethod(lambda cls, v: _check_encoding(v)))

    @model_validator(mode="after")
    def _one(self) -> SignalTopics:
        if self.topics is not None and self.topic is not None:
            raise ValueError("set either topics or topic, not both")
        if self.topics is not None and not all(t.strip() for t in self.topics):
            raise ValueError("topics must be non-empty names")
        return self


class AutoCommit(ConfigModel):
    enable: bool = True
    interval: Duration = 1.0


class MessageMarking(ConfigModel):
    after: bool = False
    on_error: bool = False
    on_permanent_error: bool | None = None  # accepted; see KafkaReceiver._deliver


class HeaderExtraction(ConfigModel):
    extract_headers: bool = False
    headers: list[str] = Field(default_factory=list)


class ErrorBackoff(RetrySettings):
    enabled: bool = False


class KafkaReceiverConfig(ClientSettings):
    topic: str | None = None  # older top-level keys, applied to every signal
    encoding: str | None = None
    traces: SignalTopics = Field(default_factory=SignalTopics)
    metrics: SignalTopics = Field(default_factory=SignalTopics)
    logs: SignalTopics = Field(default_factory=SignalTopics)
    group_id: str = Field("otel-collector", min_length=1)
    group_instance_id: str = ""
    initial_offset: Literal["latest", "earliest"] = "latest"
    session_timeout: Duration = 10.0
    heartbeat_interval: Duration = 3.0
    group_rebalance_strategy: Literal["range", "roundrobin", "sticky",
                                      "cooperative-sticky"] = "cooperative-sticky"
    min_fetch_size: int = Field(1, ge=1)
    default_fetch_size: int = Field(1_048_576, ge=1)
    max_fetch_size: int = Field(1_048_576, ge=1)
    max_fetch_wait: Duration = 0.25
    max_partition_fetch_size: int = Field(1_048_576, ge=1)
    autocommit: AutoCommit = Field(default_factory=AutoCommit)
    message_marking: MessageMarking = Field(default_factory=MessageMarking)
    header_extraction: HeaderExtraction = Field(default_factory=HeaderExtraction)
    error_backoff: ErrorBackoff = Field(default_factory=ErrorBackoff)

    _encoding = field_validator("encoding")(classmethod(lambda cls, v: _check_encoding(v)))

    @model_validator(mode="after")
    def _check(self) -> KafkaReceiverConfig:
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("heartbeat_interval must be shorter than session_timeout")
        if self.min_fetch_size > self.max_fetch_size:
            raise ValueError("min_fetch_size must be <= max_fetch_size")
        if self.encoding in _LOG_ONLY:
            raise ValueError(f"encoding {self.encoding} is only valid for logs: "
                             f"set logs.encoding: {self.encoding}")
        for signal in (Signal.TRACES, Signal.METRICS):
            enc = getattr(self, signal.value).encoding or ""
            if enc in _LOG_ONLY or enc.startswith("text_"):
                raise ValueError(f"{signal.value}.encoding {enc} is only valid for logs")
        return self

    def topics_for(self, signal: Signal) -> list[str]:
        sig = getattr(self, signal.value)
        if sig.topics:
            return list(sig.topics)
        return [sig.topic or self.topic or DEFAULT_TOPICS[signal]]

    def encoding_for(self, signal: Signal) -> str:
        return getattr(self, signal.value).encoding or self.encoding or "otlp_proto"


def create_receiver(settings: CreateSettings, config: KafkaReceiverConfig,
                    consumers: Mapping[Signal, Consumer]) -> KafkaReceiver:
    return KafkaReceiver(settings, config, consumers)


FACTORY = Factory(Kind.RECEIVER, "kafka", KafkaReceiverConfig, create_receiver,
                  description="Consumes OTLP traces, metrics and logs from Kafka topics.")


# -- payload decoding -------------------------------------------------------------------


def decode(signal: Signal, encoding: str, payload: bytes) -> Batch:
    """A batch from one message payload; raises (ValueError, DecodeError, ...) when invalid.
    OTLP protobuf payloads are checked as the OTLP receiver checks requests (malformed bytes
    and wrong id lengths are refused) and passed on unparsed."""
    if encoding == "otlp_proto":
        return checked_batch(signal, payload)
    if encoding == "otlp_json":
        return Batch.of(decode_otlp(encoding, signal, payload))
    request = signal.request_type()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.observed_time_unix_nano = time.time_ns()
    if encoding == "raw":
        record.body.bytes_value = payload
    elif encoding == "json":
        set_any(record.body, json.loads(payload))
    else:
        record.body.string_value = payload.decode(encoding[5:] if encoding != "text" else "utf-8")
    return Batch.of(request)


class _Route:
    __slots__ = ("consumer", "encoding", "signal")

    def __init__(self, signal: Signal, encoding: str, consumer: Consumer):
        self.signal, self.encoding, self.consumer = signal, encoding, consumer


# -- the component ----------------------------------------------------------------------


class KafkaReceiver(Component):
    """Consumes the configured topics in `group_id` and feeds each message to its pipeline."""

    def __init__(self, settings: CreateSettings, config: KafkaReceiverConfig,
                 consumers: Mapping[Signal, Consumer]):
        self.settings = settings
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        self.routes = self._routes(consumers)
        self._consumer: Any = None
        self._task: asyncio.Task | None = None
        self._committer: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._processing = asyncio.Lock()
        self._revoking: set[Any] = set()
        self._marked: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}
        self.assigned: frozenset = frozenset()
        m = settings.metrics
        self._m_messages = m.counter("otelcol_kafka_receiver_messages",
                                     "Kafka messages received, by topic.", ("receiver", "topic"))
        self._m_partition_start = m.counter("otelcol_kafka_receiver_partition_start",
                                            "Partitions assigned to this receiver.", ("receiver",))
        self._m_partition_close = m.counter("otelcol_kafka_receiver_partition_close",
                                            "Partitions revoked from this receiver.", ("receiver",))
        self._m_offset = m.gauge("otelcol_kafka_receiver_current_offset",
                                 "Last committed offset per partition.",
                                 ("receiver", "topic", "partition"))

    def _routes(self, consumers: Mapping[Signal, Consumer]) -> dict[str, _Route]:
        routes: dict[str, _Route] = {}
        for signal, consumer in consumers.items():
            for topic in self.config.topics_for(signal):
                if topic in routes:
                    raise ValueError(f"receiver {self.id}: topic {topic!r} is configured for both "
                                     f"{routes[topic].signal.value} and {signal.value}; give each "
                                     "signal its own topic")
                routes[topic] = _Route(signal, self.config.encoding_for(signal), consumer)
        return routes

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.id}-consume")
        if self.config.autocommit.enable:
            self._committer = asyncio.create_task(self._commit_loop(), name=f"{self.id}-commit")

    async def shutdown(self) -> None:
        """Finish the message in hand, commit what was marked, leave the group."""
        self._stopping.set()
        for task in (self._task, self._committer):
            if task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(task), 10.0)
                except TimeoutError:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        self._task = self._committer = None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._commit(consumer)
            await consumer.stop()

    def _consumer_kwargs(self) -> dict[str, Any]:
        c = self.config
        # aiokafka has no cooperative protocol: cooperative-sticky uses the eager sticky one
        assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                    }.get(c.group_rebalance_strategy, StickyPartitionAssignor)
        kwargs = {
            **c.client_kwargs(),
            "group_id": c.group_id,
            "enable_auto_commit": False,  # offsets are committed from our marks only
            "auto_offset_reset": c.initial_offset,
            "session_timeout_ms": int(c.session_timeout * 1000),
            "heartbeat_interval_ms": int(c.heartbeat_interval * 1000),
            "fetch_min_bytes": c.min_fetch_size,
            "fetch_max_bytes": c.max_fetch_size,
            "fetch_max_wait_ms": int(c.max_fetch_wait * 1000),
            "max_partition_fetch_bytes": c.max_partition_fetch_size,
            "partition_assignment_strategy": (assignor,),
        }
        if c.group_instance_id:
            kwargs["group_instance_id"] = c.group_instance_id
        return kwargs

    async def _connect(self) -> Any:
        """Start the consumer, retrying (with backoff) while the brokers are unreachable."""
        delay = 0.2
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(**self._consumer_kwargs())
            consumer.subscribe(list(self.routes), listener=_Listener(self))
            try:
                await consumer.start()
                self.log.info("joined consumer group", group_id=self.config.group_id,
                              topics=sorted(self.routes))
                return consumer
            except KafkaError as exc:
                await consumer.stop()
                self.log.warning("cannot reach kafka, retrying", error=str(exc), delay=delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
        return None

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # -- consuming -----------------------------------------------------------------------

    async def _run(self) -> None:
        self._consumer = await self._connect()
        consumer = self._consumer
        while consumer is not None and not self._stopping.is_set():
            try:
                fetched = await consumer.getmany(timeout_ms=200)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                self.log.warning("fetch failed, retrying", error=str(exc))
                await self._sleep(0.5)
                continue
            if not fetched:
                continue
            async with self._processing:
                await asyncio.gather(*(self._partition(tp, records)
                                       for tp, records in fetched.items()))
            if not self.config.autocommit.enable:
                await self._commit(consumer)

    async def _partition(self, tp: Any, records: list[Any]) -> None:
        """Deliver one partition's records in order; stop early if it is being revoked."""
        for record in records:
            if tp in self._revoking or self._stopping.is_set():
                return
            self._m_messages.labels(self.id, tp.topic).inc()
            if await self._deliver(tp, record):
                self._marked[tp] = record.offset + 1

    async def _deliver(self, tp: Any, record: Any) -> bool:
        """Push one message into its pipeline. True when its offset may be marked.

        Poison messages and permanent pipeline errors are skipped (marked): retrying cannot
        fix them and not marking would stall the partition forever. Retryable errors are
        retried with `after: true, on_error: false` until the pipeline accepts the data or
        the partition moves away (unmarked: the next owner replays it).
        """
        route = self.routes[tp.topic]
        marking = self.config.message_marking
        if not marking.after:
            self._marked[tp] = record.offset + 1
        backoff: Backoff | None = None
        started = time.monotonic()
        while True:
            try:
                batch = decode(route.signal, route.encoding, record.value or b"")
            except Exception as exc:
                self._poison(route, tp, record, exc)
                return True
            self._extract_headers(batch, record)
            items = batch.item_count()
            try:
                await route.consumer.consume(batch)
                self.settings.metrics.receiver_accepted(self.id, TRANSPORT, route.signal, items)
                return True
            except PermanentError as exc:
                self._refused(route, tp, record, items, exc)
                return True
            except Exception as exc:
                if not self._retry(marking, started, tp):
                    if marking.after and not marking.on_error:
                        return False  # revoked or stopping: leave it for a replay
                    self._refused(route, tp, record, items, exc)
                    return True
                backoff = backoff or self._backoff()
                delay = backoff.next_delay()
                self.log.info("pipeline refused a message, retrying", error=str(exc),
                              topic=tp.topic, partition=tp.partition, offset=record.offset,
                              delay=round(delay, 3))
                await self._sleep(delay)
                if tp in self._revoking or self._stopping.is_set():
                    return False

    def _backoff(self) -> Backoff:
        eb = self.config.error_backoff
        if eb.enabled:
            return Backoff(eb)
        return Backoff(RetrySettings(initial_interval=0.1, max_interval=5.0))

    def _retry(self, marking: MessageMarking, started: float, tp: Any) -> bool:
        """Whether to retry a retryable pipeline error once more."""
        eb = self.config.error_backoff
        if tp in self._revoking or self._stopping.is_set():
            return False
        if marking.after and not marking.on_error:
            return True  # at-least-once: never skip data the pipeline could not take
        if not eb.enabled:
            return False
        return not eb.max_elapsed_time or time.monotonic() - started < eb.max_elapsed_time

    def _extract_headers(self, batch: Batch, record: Any) -> None:
        h = self.config.header_extraction
        if not h.extract_headers or not record.headers:
            return
        wanted = {k: v for k, v in record.headers if k in h.headers}
        if not wanted:
            return
        for resource in getattr(batch.mutable(), batch.signal.resource_field):
            for key, value in wanted.items():
                kv = resource.resource.attributes.add(key=f"kafka.header.{key}")
                kv.value.string_value = value.decode("utf-8", "replace")

    def _poison(self, route: _Route, tp: Any, record: Any, exc: Exception) -> None:
        unit = route.signal.item_unit
        self.settings.metrics.counter(
            f"otelcol_kafka_receiver_unmarshal_failed_{unit}",
            f"Kafka messages that could not be decoded as {unit}, skipped.",
            ("receiver",)).labels(self.id).inc()
        self.log.warning("skipping undecodable kafka message", topic=tp.topic,
                         partition=tp.partition, offset=record.offset,
                         encoding=route.encoding, error=f"{type(exc).__name__}: {exc}")

    def _refused(self, route: _Route, tp: Any, record: Any, items: int, exc: Exception) -> None:
        self.settings.metrics.receiver_refused(self.id, TRANSPORT, route.signal, items)
        self.log.error("pipeline refused a kafka message", topic=tp.topic,
                       partition=tp.partition, offset=record.offset, error=str(exc))

    # -- offsets -------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.config.autocommit.interval)
            if self._consumer is not None:
                await self._commit(self._consumer)

    async def _commit(self, consumer: Any, partitions: Any = None) -> None:
        pending = {tp: off for tp, off in self._marked.items()
                   if self._committed.get(tp) != off and (partitions is None or tp in partitions)}
        if not pending:
            return
        try:
            await consumer.commit(pending)
        except KafkaError as exc:
            # CommitFailedError (a rebalance got in between) is common: the marks stay
            # and are committed by the next attempt or before the partitions move
            self.log.warning("offset commit failed", error=type(exc).__name__)
            return
        self._committed.update(pending)
        for tp, off in pending.items():
            self._m_offset.labels(self.id, tp.topic, str(tp.partition)).set(off)


class _Listener(ConsumerRebalanceListener):
    """Commits what was marked before partitions move, and logs assignments."""

    def __init__(self, receiver: KafkaReceiver):
        self.receiver = receiver

    async def on_partitions_revoked(self, revoked: Any) -> None:
        r = self.receiver
        if not revoked:
            return
        r._revoking.update(revoked)
        async with r._processing:  # the message in hand finishes (or gives up) first
            if r._consumer is not None:
                await r._commit(r._consumer, set(revoked))
        r.assigned = r.assigned - set(revoked)
        for tp in revoked:
            r._marked.pop(tp, None)
            r._committed.pop(tp, None)
        r._m_partition_close.labels(r.id).inc(len(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        r = self.receiver
        r._revoking.difference_update(assigned)
        r.assigned = frozenset(assigned)
        r._m_partition_start.labels(r.id).inc(len(assigned))
        r.log.info("partitions assigned", group_id=r.config.group_id,
                   partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

