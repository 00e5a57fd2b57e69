"""Kafka client settings shared by the `kafka` exporter and receiver (Go `configkafka` keys).

`ClientSettings` holds `brokers`, `client_id`, `protocol_version`, `tls`, `auth`, `metadata`;
`client_kwargs()` turns them into aiokafka keyword arguments. Also the OTLP payload codecs both
ends share (`otlp_proto`, `otlp_json`).
"""

from __future__ import annotations

import re
import ssl
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from otelflow import otlp_json
from otelflow.config.tls import TLSClientSettings
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Request, Signal

DEFAULT_TOPICS = {Signal.TRACES: "otlp_spans", Signal.METRICS: "otlp_metrics",
                  Signal.LOGS: "otlp_logs"}

_VERSION = re.compile(r"^\d+\.\d+\.\d+(\.\d+)?$")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class TLSSettings(TLSClientSettings):
    """Client TLS (Go `configtls.ClientConfig` keys) as an `ssl.SSLContext` for aiokafka."""

    min_version: Literal["1.2", "1.3"] = "1.2"

    def context(self) -> ssl.SSLContext | None:
        """The client context, or None when `insecure: true` (plaintext)."""
        if self.insecure:
            return None
        ctx = self.client_context()
        ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if self.min_version == "1.3"
                               else ssl.TLSVersion.TLSv1_2)
        return ctx


class PlainTextAuth(ConfigModel):
    """Deprecated in Go (use `sasl` with mechanism PLAIN); still accepted."""

    username: str
    password: str


class SASLAuth(ConfigModel):
    username: str
    password: str
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    version: Literal[0, 1] = 0


class AuthSettings(ConfigModel):
    plain_text: PlainTextAuth | None = None
    sasl: SASLAuth | None = None
    tls: TLSSettings | None = None  # deprecated alias of the top-level `tls`

    @model_validator(mode="before")
    @classmethod
    def _empty_tls(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tls" in data and data["tls"] is None:
            data = {**data, "tls": {}}
        return data

    @model_validator(mode="after")
    def _one_sasl(self) -> AuthSettings:
        if self.plain_text and self.sasl:
            raise ValueError("set either auth.plain_text or auth.sasl, not both")
        return self


class MetadataRetry(ConfigModel):
    max: int = Field(3, ge=0)
    backoff: Duration = 0.25


class MetadataSettings(ConfigModel):
    full: bool = True
    refresh_interval: Duration = 600.0
    retry: MetadataRetry = Field(default_factory=MetadataRetry)


class ClientSettings(ConfigModel):
    """The connection keys every Kafka component shares."""

    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    protocol_version: str = "2.1.0"
    resolve_canonical_bootstrap_servers_only: bool = False
    client_id: str = "otel-collector"
    conn_idle_timeout: Duration = 540.0
    tls: TLSSettings | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    metadata: MetadataSettings = Field(default_factory=MetadataSettings)

    @model_validator(mode="before")
    @classmethod
    def _empty_tls(cls, data: Any) -> Any:
        """`tls:` with no settings enables TLS with defaults, as in Go."""
        if isinstance(data, dict) and "tls" in data and data["tls"] is None:
            data = {**data, "tls": {}}
        return data

    @field_validator("brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: Any) -> Any:
        """Also accept `host:port,host:port` (handy with `${env:KAFKA_BROKERS}`)."""
        if isinstance(value, str):
            value = [b.strip() for b in value.split(",") if b.strip()]
        return value

    @field_validator("brokers")
    @classmethod
    def _check_brokers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one broker is required")
        for broker in value:
            host, _, port = broker.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"broker {broker!r} must be host:port")
        return value

    @field_validator("protocol_version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not _VERSION.match(str(value)):
            raise ValueError(f"invalid protocol_version {value!r}: expected e.g. 2.1.0")
        return str(value)

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka client keyword arguments (connection, security, metadata)."""
        tls = self.tls or self.auth.tls
        ssl_context = tls.context() if tls else None
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.brokers),
            "client_id": self.client_id,
            "metadata_max_age_ms": int(self.metadata.refresh_interval * 1000),
            "connections_max_idle_ms": int(self.conn_idle_timeout * 1000),
            "retry_backoff_ms": max(1, int(self.metadata.retry.backoff * 1000)),
        }
        sasl = self.auth.sasl or (
            SASLAuth(username=self.auth.plain_text.username, password=self.auth.plain_text.password,
                     mechanism="PLAIN") if self.auth.plain_text else None)
        if sasl:
            kwargs.update(sasl_mechanism=sasl.mechanism, sasl_plain_username=sasl.username,
                          sasl_plain_password=sasl.password)
        if ssl_context is not None:
            kwargs["ssl_context"] = ssl_context
        kwargs["security_protocol"] = (("SASL_SSL" if ssl_context else "SASL_PLAINTEXT") if sasl
                                       else ("SSL" if ssl_context else "PLAINTEXT"))
        return kwargs


def encode_otlp(encoding: str, message: Request) -> bytes:
    """`otlp_proto` / `otlp_json` payload of a request."""
    if encoding == "otlp_json":
        return otlp_json.dumps(message).encode()
    return message.SerializeToString()


def decode_otlp(encoding: str, signal: Signal, payload: bytes) -> Request:
    """Parse an `otlp_proto` / `otlp_json` payload; raises ValueError-like errors when invalid."""
    if encoding == "otlp_json":
        return otlp_json.loads(signal, payload)
    return signal.request_type.FromString(payload)
