"""`otlphttp` exporter (alias `otlp_http`): OTLP over HTTP, protobuf or JSON, as the Go
collector's otlphttp exporter (endpoint + `/v1/<signal>`, per-signal endpoint overrides)."""

from __future__ import annotations

import zlib
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import cramjam
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from pydantic import Field, SecretStr, field_validator, model_validator

from otelflow import __version__, otlp_json
from otelflow.component import (
    CreateSettings,
    Exporter,
    Factory,
    Host,
    Kind,
    PermanentError,
    RetryableError,
)
from otelflow.config.auth import AuthSettings, ClientAuth, client_authenticator
from otelflow.config.tls import TLSClientSettings
from otelflow.config.types import Duration
from otelflow.exporters.httpclient import ProxySettings, read_capped, retry_after
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.exporterhelper import ExporterSettings

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})  # the OTLP/HTTP spec's retryable set
CONTENT_TYPES = {"proto": "application/x-protobuf", "json": "application/json"}
SIGNAL_PATHS = {Signal.TRACES: "v1/traces", Signal.METRICS: "v1/metrics", Signal.LOGS: "v1/logs"}


def _check_url(value: str | None, key: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{key} must be an http:// or https:// URL, got {value!r}")
    return value


class OTLPHTTPExporterConfig(ExporterSettings, ProxySettings):
    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None
    encoding: Literal["proto", "json"] = "proto"
    compression: Literal["gzip", "zstd", "deflate", "none", ""] = "gzip"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = 30.0
    tls: TLSClientSettings = Field(default_factory=TLSClientSettings)
    auth: AuthSettings | None = None

    @field_validator("endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint")
    @classmethod
    def _url(cls, value: str | None, info) -> str | None:
        return _check_url(value, info.field_name)

    @model_validator(mode="after")
    def _some_endpoint(self) -> OTLPHTTPExporterConfig:
        if not any((self.endpoint, self.traces_endpoint, self.metrics_endpoint, self.logs_endpoint)):
            raise ValueError("set endpoint (or traces_endpoint, metrics_endpoint, logs_endpoint)")
        return self

    def url(self, signal: Signal) -> str | None:
        """The signal's own endpoint as given, else `endpoint` + `/v1/<signal>`."""
        own = getattr(self, f"{signal.value}_endpoint")
        if own:
            return own
        if self.endpoint:
            return self.endpoint.rstrip("/") + "/" + SIGNAL_PATHS[signal]
        return None


def create(settings: CreateSettings, config: OTLPHTTPExporterConfig) -> OTLPHTTPExporter:
    return OTLPHTTPExporter(settings, config)


FACTORY = Factory(Kind.EXPORTER, "otlphttp", OTLPHTTPExporterConfig, create,
                  description="OTLP over HTTP (protobuf or JSON)")


class OTLPHTTPExporter(Exporter):
    def __init__(self, settings: CreateSettings, config: OTLPHTTPExporterConfig):
        self.config = config
        self.log = settings.logger
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuth | None = None
        self._headers = {"Content-Type": CONTENT_TYPES[config.encoding],
                         "User-Agent": f"otelflow/{__version__}"}
        if config.compression not in ("", "none"):
            self._headers["Content-Encoding"] = config.compression
        self._headers.update({k: v.get_secret_value() for k, v in config.headers.items()})

    async def start(self, host: Host) -> None:
        self._auth = client_authenticator(host, self.config.auth)
        uses_tls = any((self.config.url(s) or "").startswith("https://") for s in Signal)
        ssl = self.config.tls.client_context() if uses_tls else False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl),
            timeout=aiohttp.ClientTimeout(total=self.config.timeout or None),
            auto_decompress=True)

    async def shutdown(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def export(self, batch: Batch) -> None:
        assert self._session is not None, "otlphttp exporter used before start"
        url = self.config.url(batch.signal)
        if url is None:
            raise PermanentError(f"no endpoint for {batch.signal.value}: set endpoint or "
                                 f"{batch.signal.value}_endpoint")
        headers = dict(self._headers)
        if self._auth is not None:  # the extension's headers, for this batch's metadata
            self._auth.apply(headers, batch.metadata)
        body = compress(self.encode(batch), self.config.compression)
        try:
            async with self._session.post(
                    url, data=body, headers=headers, **self.config.proxy_options(),
                    server_hostname=self.config.tls.server_name_override) as response:
                content = await read_capped(response)
                self._check(batch.signal, response, content)
        except aiohttp.ClientError as exc:
            raise RetryableError(f"sending to {redact_url(url)} failed: {exc}") from None

    def encode(self, batch: Batch) -> bytes:
        if self.config.encoding == "json":
            return otlp_json.dumps(batch.message).encode()
        return batch.to_bytes()

    def _check(self, signal: Signal, response: aiohttp.ClientResponse, content: bytes) -> None:
        status = response.status
        if 200 <= status < 300:
            self._log_partial_success(signal, response.content_type, content)
            return
        message = f"HTTP {status}: {error_message(response.content_type, content)}"
        if status in RETRYABLE_STATUSES:
            raise RetryableError(message, retry_after(response.headers.get("Retry-After")))
        raise PermanentError(message)

    def _log_partial_success(self, signal: Signal, content_type: str, content: bytes) -> None:
        if not content:
            return
        try:
            reply = decode(signal.response_type(), content_type, content)
        except (ValueError, DecodeError):  # json_format.ParseError is a ValueError
            return  # a 2xx whose body is not an OTLP response still means success
        partial = reply.partial_success
        rejected = getattr(partial, signal.rejected_field)
        if rejected or partial.error_message:
            self.log.warning("backend partially rejected the request", rejected=rejected,
                             message=partial.error_message)


def redact_url(url: str) -> str:
    """The URL without user:password (never logged)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="<redacted>@" + parts.netloc.rpartition("@")[2]).geturl()


def compress(body: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return bytes(cramjam.gzip.compress(body))
    if compression == "zstd":
        return bytes(cramjam.zstd.compress(body))
    if compression == "deflate":
        return zlib.compress(body)
    return body


def decode(message, content_type: str, content: bytes):
    """Fill `message` from a protobuf or JSON body (raises ValueError / ParseError)."""
    if content_type == "application/json":
        json_format.Parse(content, message, ignore_unknown_fields=True)
    else:
        message.ParseFromString(content)
    return message


def error_message(content_type: str, content: bytes) -> str:
    """The google.rpc.Status message of an error body, else its start as text."""
    if content_type in CONTENT_TYPES.values():
        try:
            status = decode(status_pb2.Status(), content_type, content)
            if status.message:
                return status.message
        except (ValueError, DecodeError):  # garbage: fall back to the raw text
            pass
    return content[:512].decode("utf-8", "replace").strip() or "(no body)"


