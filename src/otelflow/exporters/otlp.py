"""`otlp` exporter (alias `otlp_grpc`): OTLP over gRPC, forwarding received bytes untouched
when no processor changed them."""

from __future__ import annotations

from typing import Literal

import grpc
from google.rpc import error_details_pb2, status_pb2
from pydantic import Field, SecretStr, field_validator, model_validator

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
from otelflow.config.types import ConfigModel, Duration, millisecond_args
from otelflow.pdata import Batch, Signal
from otelflow.pipeline.exporterhelper import ExporterSettings
from otelflow.receivers.otlp import GRPC_SERVICES, encode_forwarded_metadata

COMPRESSION = {"gzip": grpc.Compression.Gzip, "none": grpc.Compression.NoCompression,
               "": grpc.Compression.NoCompression}

# The OTLP spec's retryable gRPC codes; RESOURCE_EXHAUSTED only when the server sent RetryInfo.
RETRYABLE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.CANCELLED,
})


class ClientKeepalive(ConfigModel):
    time: Duration | None = None
    timeout: Duration | None = None
    permit_without_stream: bool = False

    def channel_options(self) -> list[tuple[str, int]]:
        """The gRPC core arguments for these settings (durations in ms)."""
        return [*millisecond_args(("grpc.keepalive_time_ms", self.time),
                                  ("grpc.keepalive_timeout_ms", self.timeout)),
                ("grpc.keepalive_permit_without_calls", int(self.permit_without_stream))]


class OTLPExporterConfig(ExporterSettings):
    endpoint: str
    authority: str = ""  # overrides the :authority header (virtual hosting)
    keepalive: ClientKeepalive | None = None
    wait_for_ready: bool = False  # wait for a connection instead of failing at once
    tls: TLSClientSettings = Field(default_factory=TLSClientSettings)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    compression: Literal["gzip", "none", ""] = "gzip"
    balancer_name: Literal["round_robin", "pick_first"] = "round_robin"
    auth: AuthSettings | None = None

    @model_validator(mode="after")
    def _skip_verify(self) -> OTLPExporterConfig:
        if self.tls.insecure_skip_verify and self.target()[1]:
            raise ValueError("tls.insecure_skip_verify is not supported by the gRPC exporter "
                             "(grpcio always verifies the server): set tls.ca_file to the "
                             "server's CA, or use the otlphttp exporter")
        return self

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("endpoint must not be empty")
        return value.strip()

    def target(self) -> tuple[str, bool]:
        """(host:port, use_tls): an `http://` scheme means plaintext, `https://` TLS."""
        endpoint, insecure = self.endpoint, self.tls.insecure
        for scheme, plain in (("http://", True), ("https://", False)):
            if endpoint.startswith(scheme):
                endpoint, insecure = endpoint[len(scheme):], plain
        return endpoint.rstrip("/"), not insecure


def create(settings: CreateSettings, config: OTLPExporterConfig) -> OTLPExporter:
    return OTLPExporter(settings, config)


FACTORY = Factory(Kind.EXPORTER, "otlp", OTLPExporterConfig, create,
                  description="OTLP over gRPC")


class OTLPExporter(Exporter):
    def __init__(self, settings: CreateSettings, config: OTLPExporterConfig,
                 forward_metadata: bool = False):
        """`forward_metadata`: send each batch's request metadata along, for this collector's
        own worker processes (`pipeline.affinity`) to restore it."""
        self.config = config
        self.forward_metadata = forward_metadata
        self.log = settings.logger
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[Signal, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._metadata = tuple((k.lower(), v.get_secret_value()) for k, v in config.headers.items())
        self._auth: ClientAuth | None = None

    async def start(self, host: Host) -> None:
        self._auth = client_authenticator(host, self.config.auth)
        target, use_tls = self.config.target()
        options: list[tuple[str, str | int]] = [("grpc.lb_policy_name", self.config.balancer_name)]
        if self.config.authority:
            options.append(("grpc.default_authority", self.config.authority))
        if self.config.keepalive is not None:
            options += self.config.keepalive.channel_options()
        compression = COMPRESSION[self.config.compression]
        if use_tls:
            tls = self.config.tls
            ca, key, cert = tls.read_files()
            credentials = grpc.ssl_channel_credentials(ca, key, cert)
            if tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", tls.server_name_override))
            self._channel = grpc.aio.secure_channel(target, credentials, options, compression)
        else:
            self._channel = grpc.aio.insecure_channel(target, options, compression)
        self._calls = {signal: self._channel.unary_unary(f"/{service}/Export")
                       for signal, service in GRPC_SERVICES.items()}

    async def shutdown(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def export(self, batch: Batch) -> None:
        call = self._calls[batch.signal]
        metadata = self._metadata
        if self._auth is not None:  # the extension's headers, for this batch's metadata
            headers = dict(metadata)
            self._auth.apply(headers, batch.metadata)
            metadata = tuple((k.lower(), v) for k, v in headers.items())
        if self.forward_metadata and batch.metadata is not None:
            metadata += (encode_forwarded_metadata(batch.metadata),)
        try:
            response = await call(batch.to_bytes(), timeout=self.config.timeout or None,
                                  metadata=metadata, wait_for_ready=self.config.wait_for_ready)
        except grpc.aio.AioRpcError as exc:
            raise classify(exc) from None
        self._check_partial_success(batch.signal, response)

    def _check_partial_success(self, signal: Signal, response: bytes) -> None:
        if not response:
            return
        partial = signal.response_type.FromString(response).partial_success
        rejected = getattr(partial, signal.rejected_field)
        if rejected or partial.error_message:
            self.log.warning("backend partially rejected the request", rejected=rejected,
                             message=partial.error_message)


def classify(exc: grpc.aio.AioRpcError) -> PermanentError | RetryableError:
    """Map a gRPC failure to the OTLP spec's retry decision (honouring RetryInfo)."""
    code = exc.code()
    delay = retry_delay(exc)
    message = f"{code.name}: {exc.details()}"
    if code in RETRYABLE_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return RetryableError(message, delay)
    return PermanentError(message)


def retry_delay(exc: grpc.aio.AioRpcError) -> float | None:
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None
