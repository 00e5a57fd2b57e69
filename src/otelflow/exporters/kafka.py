"""`kafka` exporter: OTLP requests to Kafka topics with aiokafka (Go `kafkaexporter` keys).

Per signal a topic and an encoding (`otlp_proto` default, `otlp_json`, `raw` log bodies).
With `partition_traces_by_id` a request is split per trace so every span of a trace shares the
message key (the hex trace id) and so one partition; `partition_*_by_resource_attributes`
split per resource, keyed by a hash of its attributes. Messages over
`producer.max_message_bytes` are split further instead of failing. Defaults are at-least-once:
`required_acks: -1` (all) with the idempotent producer.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, errors
from pydantic import Field, field_validator, model_validator

from otelflow.component import (
    CreateSettings,
    Exporter,
    Factory,
    Host,
    Kind,
    PermanentError,
    RetryableError,
)
from otelflow.config.types import ByteSize, ConfigModel, Duration
from otelflow.kafka_common import DEFAULT_TOPICS, ClientSettings, encode_otlp
from otelflow.pdata import Batch, Request, Signal, count_items, split_request
from otelflow.pipeline.exporterhelper import ExporterSettings
from otelflow.pipeline.split import split_by_resource, split_by_trace_id, split_wire_by_trace_id

Encoding = Literal["otlp_proto", "otlp_json", "raw"]
Message = tuple[bytes | None, bytes]  # (key, value)


class SignalSettings(ConfigModel):
    """`traces|metrics|logs: {topic, encoding}`; unset keys fall back to the top-level ones."""

    topic: str | None = None
    encoding: Encoding | None = None


class CompressionParams(ConfigModel):
    level: int = -1  # accepted; aiokafka uses each codec's default level


class ProducerSettings(ConfigModel):
    max_message_bytes: ByteSize = Field(1_000_000, gt=0)
    max_broker_write_bytes: ByteSize = Field(104_857_600, gt=0)
    required_acks: Literal[-1, 0, 1] = -1  # Go's default is 1; -1 (all) gives at-least-once
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    compression_params: CompressionParams = Field(default_factory=CompressionParams)
    flush_max_messages: int = Field(10_000, ge=0)
    allow_auto_topic_creation: bool = True
    linger: Duration = 0.01

    @model_validator(mode="after")
    def _sizes(self) -> ProducerSettings:
        if self.max_broker_write_bytes < self.max_message_bytes:
            raise ValueError("max_broker_write_bytes must be >= max_message_bytes")
        return self


class KafkaExporterConfig(ClientSettings, ExporterSettings):
    topic: str | None = None  # older top-level keys, applied to every signal
    encoding: Encoding | None = None
    traces: SignalSettings = Field(default_factory=SignalSettings)
    metrics: SignalSettings = Field(default_factory=SignalSettings)
    logs: SignalSettings = Field(default_factory=SignalSettings)
    topic_from_attribute: str = ""
    partition_traces_by_id: bool = False
    partition_metrics_by_resource_attributes: bool = False
    partition_logs_by_resource_attributes: bool = False
    partition_logs_by_trace_id: bool = False
    record_headers: dict[str, str] = Field(default_factory=dict)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("topic must not be empty")
        return value

    @model_validator(mode="after")
    def _check(self) -> KafkaExporterConfig:
        if self.partition_logs_by_resource_attributes and self.partition_logs_by_trace_id:
            raise ValueError("partition_logs_by_resource_attributes and "
                             "partition_logs_by_trace_id are mutually exclusive")
        if self.encoding == "raw":
            raise ValueError("encoding raw is only valid for logs: set logs.encoding: raw")
        for signal in (Signal.TRACES, Signal.METRICS):
            if getattr(self, signal.value).encoding == "raw":
                raise ValueError(f"{signal.value}.encoding raw is only valid for logs; "
                                 "use otlp_proto or otlp_json")
        return self

    def topic_for(self, signal: Signal) -> str:
        return getattr(self, signal.value).topic or self.topic or DEFAULT_TOPICS[signal]

    def encoding_for(self, signal: Signal) -> str:
        return getattr(self, signal.value).encoding or self.encoding or "otlp_proto"


def create_exporter(settings: CreateSettings, config: KafkaExporterConfig) -> KafkaExporter:
    return KafkaExporter(settings, config)


FACTORY = Factory(Kind.EXPORTER, "kafka", KafkaExporterConfig, create_exporter,
                  description="Writes OTLP traces, metrics and logs to Kafka topics.")


def raw_log_bodies(request: Request, by_trace: bool) -> Iterator[Message]:
    """The `raw` encoding: one message per log record holding its body (bytes as is, other
    values as JSON, as the Go exporter does)."""
    for resource in request.resource_logs:
        for scope in resource.scope_logs:
            for record in scope.log_records:
                key = record.trace_id.hex().encode() if by_trace and record.trace_id else None
                yield key, _body_bytes(record.body)


def _body_bytes(value: Any) -> bytes:
    kind = value.WhichOneof("value")
    if kind == "bytes_value":
        return value.bytes_value
    return json.dumps(_any_value(value), separators=(",", ":")).encode()


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def sarama_partition(key: bytes, all_partitions: list[int], available: list[int]) -> int:
    """The Go exporter's default key hashing (sarama's FNV-1a hash partitioner), so Go and
    Python producers put a key in the same partition; keyless messages go to any partition."""
    partitions = sorted(all_partitions)
    if key is None:
        return random.choice(available or partitions)
    h = 0x811C9DC5
    for byte in key:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    if h >= 0x80000000:
        h -= 0x100000000
    return partitions[abs(h) % len(partitions)]


# -- the component ----------------------------------------------------------------------


class KafkaExporter(Exporter):
    """Produces each batch as one or more Kafka messages and waits for their acks."""

    def __init__(self, settings: CreateSettings, config: KafkaExporterConfig):
        self.settings = settings
        self.config = config
        self.log = settings.logger
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._headers = [(k, v.encode()) for k, v in config.record_headers.items()]
        self._limit = config.producer.max_message_bytes
        self._messages = settings.metrics.counter(
            "otelcol_kafka_exporter_messages", "Kafka messages produced, by topic.",
            ("exporter", "topic"))

    async def start(self, host: Host) -> None:
        try:
            await asyncio.wait_for(self._ensure_producer(), self.config.timeout or 5.0)
        except (TimeoutError, RetryableError) as exc:
            self.log.warning("kafka not reachable yet; will connect on first export",
                             brokers=self.config.brokers, error=str(exc))

    async def shutdown(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes pending messages

    def _producer_kwargs(self) -> dict[str, Any]:
        p = self.config.producer
        acks = {-1: "all", 0: 0, 1: 1}[p.required_acks]
        return {
            **self.config.client_kwargs(),
            "acks": acks,
            "enable_idempotence": acks == "all",
            "compression_type": None if p.compression == "none" else p.compression,
            "linger_ms": int(p.linger * 1000),
            "max_batch_size": max(16384, min(self._limit, 1 << 20)),
            "max_request_size": self._limit + 65536,  # room for record headers/overhead
            "partitioner": sarama_partition,
        }

    async def _ensure_producer(self) -> Any:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._producer_kwargs())
                try:
                    await producer.start()
                except errors.KafkaError as exc:
                    await producer.stop()
                    raise RetryableError(f"cannot connect to kafka {self.config.brokers}: "
                                         f"{exc}") from exc
                self._producer = producer
                self.log.info("connected to kafka", brokers=self.config.brokers)
        return self._producer

    # -- marshalling ---------------------------------------------------------------------

    def topic(self, batch: Batch) -> str:
        """`topic_from_attribute` (first resource carrying it) or the signal's topic."""
        attr = self.config.topic_from_attribute
        if attr:
            for resource in getattr(batch.message, batch.signal.resource_field):
                for kv in resource.resource.attributes:
                    if kv.key == attr and kv.value.string_value:
                        return kv.value.string_value
        return self.config.topic_for(batch.signal)

    def messages(self, batch: Batch) -> list[Message]:
        """The (key, value) messages a batch becomes, each within `max_message_bytes`."""
        signal, cfg = batch.signal, self.config
        encoding = cfg.encoding_for(signal)
        if encoding == "raw":
            return self._fit_raw(batch)
        by_trace = (signal is Signal.TRACES and cfg.partition_traces_by_id) or (
            signal is Signal.LOGS and cfg.partition_logs_by_trace_id)
        if by_trace and encoding == "otlp_proto":
            return self._by_trace_wire(batch)
        if by_trace:
            parts = [(tid.hex().encode() if tid else None, req)
                     for tid, req in split_by_trace_id(signal, batch.message)]
        elif (signal is Signal.METRICS and cfg.partition_metrics_by_resource_attributes) or (
                signal is Signal.LOGS and cfg.partition_logs_by_resource_attributes):
            parts = split_by_resource(signal, batch.message)
        else:
            value = batch.to_bytes() if encoding == "otlp_proto" else None
            if value is not None and len(value) <= self._limit:
                return [(None, value)]  # the common case: forward the received bytes
            parts = [(None, batch.message)]
        return [(key, value) for key, req in parts
                for value in self._fit(signal, encoding, req)]

    def _by_trace_wire(self, batch: Batch) -> list[Message]:
        """otlp_proto per trace, split on the wire bytes (no per-span protobuf work)."""
        out = []
        for tid, value in split_wire_by_trace_id(batch.signal, batch.to_bytes()):
            key = tid.hex().encode() if tid else None
            if len(value) <= self._limit:
                out.append((key, value))
            else:
                request = batch.signal.request_type.FromString(value)
                out += [(key, v) for v in self._fit(batch.signal, "otlp_proto", request)]
        return out

    def _fit(self, signal: Signal, encoding: str, request: Request) -> list[bytes]:
        """Encode, halving the request until every piece is within the size limit."""
        value = encode_otlp(encoding, request)
        if len(value) <= self._limit:
            return [value]
        halves = split_request(signal, request, max(1, (count_items(signal, request) + 1) // 2))
        if len(halves) < 2:  # one span / log record / metric: cannot be split further
            self._too_large(signal, len(value))
            return []
        return [v for half in halves for v in self._fit(signal, encoding, half)]

    def _fit_raw(self, batch: Batch) -> list[Message]:
        out = []
        for key, value in raw_log_bodies(batch.message, self.config.partition_logs_by_trace_id):
            if len(value) <= self._limit:
                out.append((key, value))
            else:
                self._too_large(batch.signal, len(value))
        return out

    def _too_large(self, signal: Signal, size: int) -> None:
        self.settings.metrics.dropped(str(self.settings.id), signal, "too_large", 1)
        self.log.error(f"dropping a single {signal.item_unit[:-1]} larger than "
                       "producer.max_message_bytes", size=size, limit=self._limit)

    # -- sending -------------------------------------------------------------------------

    async def export(self, batch: Batch) -> None:
        producer = await self._ensure_producer()
        topic = self.topic(batch)
        messages = self.messages(batch)
        try:
            futures = [await producer.send(topic, value, key=key, headers=self._headers)
                       for key, value in messages]
            await asyncio.gather(*futures)
        except errors.KafkaError as exc:
            raise _classify(exc, topic) from exc
        self._messages.labels(str(self.settings.id), topic).inc(len(messages))


def _classify(exc: Exception, topic: str) -> Exception:
    """Kafka errors are retryable (as in Go) except those no retry can fix."""
    permanent = (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError,
                 errors.InvalidTopicError, errors.RecordTooLargeError)
    text = f"producing to topic {topic!r} failed: {type(exc).__name__}: {exc}"
    return PermanentError(text) if isinstance(exc, permanent) else RetryableError(text)
