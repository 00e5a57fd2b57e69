"""`prometheusremotewrite` exporter: OTLP metrics -> Prometheus remote-write 1.0.

Config keys follow the Go exporter. Metrics are translated with the Go translator's rules
(`prometheus_translation`), encoded as a `prometheus.WriteRequest`, snappy block-compressed
and POSTed; one export is cut into requests under `max_batch_size_bytes`, sent with
`remote_write_queue.num_consumers` concurrency. The sending queue keeps one consumer (as in
Go) so the samples of a series reach the server in timestamp order.
HTTP 5xx and 429 are retried (honouring `Retry-After`); other 4xx are permanent.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import cramjam
from pydantic import Field, field_validator, model_validator

from otelflow import __version__
from otelflow.component import (
    CreateSettings,
    Exporter,
    Factory,
    Host,
    Kind,
    PermanentError,
    RetryableError,
)
from otelflow.config.tls import TLSClientSettings
from otelflow.config.types import ByteSize, ConfigModel
from otelflow.exporters.httpclient import ProxySettings, read_capped, retry_after
from otelflow.exporters.prometheus_translation import (
    RemoteWriteEncoder,
    SeriesBuilder,
    TranslationSettings,
)
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.exporterhelper import ExporterSettings, QueueSettings, RetrySettings

MAX_RETRY_ENTRIES = 64
"""Batches whose failed requests are kept for the chain's next retry."""
RESERVED_HEADERS = ("content-encoding", "content-type", "x-prometheus-remote-write-version",
                    "user-agent")


class RemoteWriteQueue(ConfigModel):
    enabled: bool = True
    queue_size: int = Field(10000, ge=1)
    num_consumers: int = Field(5, ge=1)


class Enabled(ConfigModel):
    enabled: bool = False


class EnabledByDefault(ConfigModel):
    enabled: bool = True


def _go_retry_defaults() -> RetrySettings:
    return RetrySettings(initial_interval=0.05, max_interval=0.2, max_elapsed_time=60.0)


class Config(ExporterSettings, ProxySettings):
    endpoint: str
    headers: dict[str, str] = Field(default_factory=dict)
    namespace: str = ""
    external_labels: dict[str, str] = Field(default_factory=dict)
    resource_to_telemetry_conversion: Enabled = Field(default_factory=Enabled)
    target_info: EnabledByDefault = Field(default_factory=EnabledByDefault)
    add_metric_suffixes: bool = True
    send_metadata: bool = False
    max_batch_size_bytes: ByteSize = Field(3_000_000, gt=0)
    remote_write_queue: RemoteWriteQueue = Field(default_factory=RemoteWriteQueue)
    retry_on_failure: RetrySettings = Field(default_factory=_go_retry_defaults)
    tls: TLSClientSettings = Field(default_factory=TLSClientSettings)

    @model_validator(mode="before")
    @classmethod
    def _no_sending_queue(cls, data: Any) -> Any:
        if isinstance(data, dict) and "sending_queue" in data:
            raise ValueError("prometheusremotewrite does not support sending_queue; "
                             "use remote_write_queue (enabled, queue_size, num_consumers)")
        return data

    @model_validator(mode="after")
    def _queue_from_remote_write_queue(self) -> Config:
        q = self.remote_write_queue
        # One queue consumer keeps each series' samples in order; fan-out happens per export.
        self.sending_queue = QueueSettings(enabled=q.enabled, queue_size=q.queue_size,
                                           num_consumers=1)
        return self

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint {value!r} must be an http:// or https:// URL "
                             "(e.g. http://prometheus:9090/api/v1/write)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {key!r} cannot be changed (reserved: "
                                 f"{', '.join(RESERVED_HEADERS)})")
        return value

    @field_validator("external_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label_value in value.items():
            if not key or not str(label_value):
                raise ValueError(f"external label {key!r}: names and values must be non-empty")
        return value


def create(settings: CreateSettings, config: Config) -> PrometheusRemoteWriteExporter:
    return PrometheusRemoteWriteExporter(settings, config)


FACTORY = Factory(Kind.EXPORTER, "prometheusremotewrite", Config, create,
                  signals=frozenset({Signal.METRICS}),
                  description="Prometheus remote-write 1.0 (snappy protobuf over HTTP)")


class PrometheusRemoteWriteExporter(Exporter):
    """Translates, encodes and POSTs metrics; raises Retryable/Permanent errors by status."""

    def __init__(self, settings: CreateSettings, config: Config):
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        self.metrics = settings.metrics
        self.builder = SeriesBuilder(TranslationSettings(
            namespace=config.namespace, external_labels=config.external_labels,
            resource_to_telemetry=config.resource_to_telemetry_conversion.enabled,
            target_info=config.target_info.enabled, add_suffixes=config.add_metric_suffixes,
            send_metadata=config.send_metadata))
        self.headers = {**config.headers,
                        "Content-Encoding": "snappy",
                        "Content-Type": "application/x-protobuf",
                        "X-Prometheus-Remote-Write-Version": "0.1.0",
                        "User-Agent": f"otelflow/{__version__}"}
        self._session: aiohttp.ClientSession | None = None
        self._retry_bodies: dict[int, tuple[Batch, list[bytes]]] = {}
        override = config.tls.server_name_override
        self._request_options = {**config.proxy_options(),
                                 **({"server_hostname": override} if override else {})}
        self._failed_translations = self.metrics.counter(
            "otelcol_exporter_prometheusremotewrite_failed_translations",
            "Number of translation operations that failed to translate metrics from Otel to "
            "Prometheus", ("exporter",)).labels(self.id)
        self._translated = self.metrics.counter(
            "otelcol_exporter_prometheusremotewrite_translated_time_series",
            "Number of Prometheus time series that were translated from OTel metrics",
            ("exporter",)).labels(self.id)

    async def start(self, host: Host) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=self._ssl_context(), limit=self.config.remote_write_queue.num_consumers))

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext | bool:
        tls = self.config.tls
        if urlsplit(self.config.endpoint).scheme != "https":
            return False
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def encode(self, batch: Batch) -> list[bytes]:
        """The compressed WriteRequest bodies for a batch (counts refused points)."""
        encoder = RemoteWriteEncoder()
        result = self.builder.build(batch.message, encoder, batch.to_bytes())
        if result.dropped:
            self._failed_translations.inc()
            self.metrics.dropped(self.id, Signal.METRICS, "unsupported_metric",
                                 result.dropped)
            self.log.warning("metric points dropped in translation", points=result.dropped,
                             errors=result.errors[:5])
        self._translated.inc(encoder.series_count)
        return [cramjam.snappy.compress_raw(body).read()
                for body in encoder.requests(self.config.max_batch_size_bytes)]

    async def export(self, batch: Batch) -> None:
        """Send every request of the batch; a retry of the same batch re-sends only the
        requests that failed (translation and counting happen once)."""
        pending = self._retry_bodies.pop(id(batch), None)
        bodies = pending[1] if pending and pending[0] is batch else self.encode(batch)
        if not bodies:
            return
        if len(bodies) == 1:
            results: list[BaseException | None] = [await self._try_post(bodies[0])]
        else:
            limit = asyncio.Semaphore(self.config.remote_write_queue.num_consumers)

            async def send(body: bytes) -> BaseException | None:
                async with limit:
                    return await self._try_post(body)

            results = await asyncio.gather(*(send(b) for b in bodies))
        errors = [e for e in results if e is not None]
        if not errors:
            return
        error = _combine(errors)
        if isinstance(error, RetryableError):
            failed = [b for b, e in zip(bodies, results, strict=True) if e is not None]
            self._retry_bodies[id(batch)] = (batch, failed)
            while len(self._retry_bodies) > MAX_RETRY_ENTRIES:  # given up on by the chain
                self._retry_bodies.pop(next(iter(self._retry_bodies)))
        raise error

    async def _try_post(self, body: bytes) -> BaseException | None:
        try:
            await self._post(body)
        except (PermanentError, RetryableError) as exc:
            return exc
        return None

    async def _post(self, body: bytes) -> None:
        if self._session is None:
            raise RetryableError(f"exporter {self.id} is not started")
        try:
            async with self._session.post(self.config.endpoint, data=body, headers=self.headers,
                                          **self._request_options) as resp:
                if 200 <= resp.status < 300:
                    return
                text = (await read_capped(resp)).decode("utf-8", "replace")
                message = (f"remote write to {self.config.endpoint} failed: HTTP "
                           f"{resp.status}: {text.strip()}")
                if resp.status >= 500 or resp.status == 429:
                    raise RetryableError(message,
                                         retry_after(resp.headers.get("Retry-After")))
                raise PermanentError(message)
        except aiohttp.ClientError as exc:
            raise RetryableError(f"remote write to {self.config.endpoint} failed: {exc!r}") \
                from exc


def _combine(errors: list[BaseException]) -> BaseException:
    """One error for several failed requests: permanent wins (retrying cannot help), else
    retryable with the longest server-requested delay."""
    for exc in errors:
        if isinstance(exc, PermanentError):
            return exc
    if len(errors) == 1:
        return errors[0]
    delays = [e.retry_after for e in errors
              if isinstance(e, RetryableError) and e.retry_after is not None]
    return RetryableError(f"{len(errors)} requests failed, first: {errors[0]}",
                          max(delays) if delays else None)
