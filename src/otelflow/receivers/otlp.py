"""`otlp` receiver: OTLP over gRPC (raw bytes in, no per-request stub objects; the transport
lives in `otelflow.receivers.otlp_grpc`) and over HTTP (aiohttp; `otelflow.receivers.otlp_http`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from pydantic import Field, field_validator, model_validator

from otelflow.component import (
    Component,
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    PartiallyRejected,
    PermanentError,
    RetryableError,
)
from otelflow.config.auth import AuthSettings, ServerAuthenticator, server_authenticator
from otelflow.config.tls import TLSServerSettings
from otelflow.config.types import ByteSize, ConfigModel, Duration, millisecond_args
from otelflow.otlp_check import InvalidIds, MalformedRequest, checked_batch
from otelflow.pdata import Batch, Metadata, Signal
from otelflow.receivers import otlp_grpc
from otelflow.receivers.otlp_http import SUPPORTED_ENCODINGS, HttpServer

# Between this collector's own worker processes (`pipeline.affinity`): a forwarded batch's
# request metadata, as JSON {key: [values]}, read only by `trusted` receivers.
FORWARDED_METADATA = "otelflow-metadata-bin"

GRPC_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}


class KeepaliveServerParameters(ConfigModel):
    max_connection_idle: Duration | None = None
    max_connection_age: Duration | None = None
    max_connection_age_grace: Duration | None = None
    time: Duration | None = None
    timeout: Duration | None = None


class KeepaliveEnforcementPolicy(ConfigModel):
    min_time: Duration | None = None
    permit_without_stream: bool = False


class KeepaliveSettings(ConfigModel):
    server_parameters: KeepaliveServerParameters | None = None
    enforcement_policy: KeepaliveEnforcementPolicy | None = None

    def channel_options(self) -> list[tuple[str, int]]:
        """The gRPC core arguments for these settings (durations in ms)."""
        params = self.server_parameters or KeepaliveServerParameters()
        options = millisecond_args(
            ("grpc.max_connection_idle_ms", params.max_connection_idle),
            ("grpc.max_connection_age_ms", params.max_connection_age),
            ("grpc.max_connection_age_grace_ms", params.max_connection_age_grace),
            ("grpc.keepalive_time_ms", params.time),
            ("grpc.keepalive_timeout_ms", params.timeout))
        policy = self.enforcement_policy
        if policy is not None:
            options += millisecond_args(
                ("grpc.http2.min_ping_interval_without_data_ms", policy.min_time))
            options.append(("grpc.keepalive_permit_without_calls",
                            int(policy.permit_without_stream)))
        return options


class GrpcSettings(ConfigModel):
    endpoint: str = "localhost:4317"
    transport: Literal["tcp", "unix"] = "tcp"  # unix: `endpoint` is a socket path
    max_recv_msg_size_mib: int = Field(4, ge=1)
    max_concurrent_streams: int | None = Field(None, ge=1)
    keepalive: KeepaliveSettings | None = None
    tls: TLSServerSettings | None = None
    auth: AuthSettings | None = None
    # record each request's gRPC metadata with its batch (`Batch.metadata`), as Go's configgrpc
    include_metadata: bool = False

    @property
    def address(self) -> str:
        """What gRPC binds: host:port, or `unix:PATH` for the unix transport."""
        return f"unix:{self.endpoint}" if self.transport == "unix" else self.endpoint


class CORSSettings(ConfigModel):
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_headers: list[str] = Field(default_factory=list)
    max_age: int = Field(0, ge=0)


class HttpSettings(ConfigModel):
    endpoint: str = "localhost:4318"
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"
    max_request_body_size: ByteSize = Field(20 * 1024 * 1024, ge=1)
    # Go's names for the request encodings accepted (Go's snappy and lz4 are not decoded here)
    compression_algorithms: list[Literal["", "gzip", "zstd", "zlib", "deflate"]] = Field(
        default_factory=lambda: list(SUPPORTED_ENCODINGS))
    read_header_timeout: Duration = 60.0  # 0: none
    idle_timeout: Duration = 60.0  # keep-alive connections without a request; 0: none
    response_headers: dict[str, str] = Field(default_factory=dict)
    cors: CORSSettings | None = None
    tls: TLSServerSettings | None = None
    auth: AuthSettings | None = None
    # record each request's HTTP headers with its batch (`Batch.metadata`), as Go's confighttp
    include_metadata: bool = False

    @field_validator("traces_url_path", "metrics_url_path", "logs_url_path")
    @classmethod
    def _path(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("a URL path must not be empty")
        return value if value.startswith("/") else "/" + value

    @model_validator(mode="after")
    def _distinct_paths(self) -> HttpSettings:
        paths = [self.traces_url_path, self.metrics_url_path, self.logs_url_path]
        if len(set(paths)) != len(paths):
            raise ValueError(f"traces_url_path, metrics_url_path and logs_url_path must differ "
                             f"(got {', '.join(paths)})")
        return self


class Protocols(ConfigModel):
    grpc: GrpcSettings | None = None
    http: HttpSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data):
        """`http:` with no value enables the protocol with its defaults, as in the Go collector."""
        if isinstance(data, dict):
            return {k: ({} if v is None and k in cls.model_fields else v) for k, v in data.items()}
        return data


class OTLPReceiverConfig(ConfigModel):
    protocols: Protocols = Field(default_factory=lambda: Protocols(grpc=GrpcSettings()))

    @model_validator(mode="after")
    def _one_protocol(self) -> OTLPReceiverConfig:
        if not any(getattr(self.protocols, name) for name in Protocols.model_fields):
            raise ValueError("protocols: enable at least one of: "
                             + ", ".join(Protocols.model_fields))
        return self

    def listen_endpoints(self):
        for name in Protocols.model_fields:
            settings = getattr(self.protocols, name)
            if settings is not None and getattr(settings, "transport", "tcp") == "tcp":
                yield f"protocols.{name}.endpoint", settings.endpoint


def create(settings: CreateSettings, config: OTLPReceiverConfig,
           consumers: Mapping[Signal, Consumer]) -> OTLPReceiver:
    return OTLPReceiver(settings, config, consumers)


FACTORY = Factory(Kind.RECEIVER, "otlp", OTLPReceiverConfig, create,
                  description="OTLP over gRPC and HTTP (protobuf, JSON)")


class OTLPReceiver(Component):
    """Serves the OTLP export services for the signals it has consumers for."""

    def __init__(self, settings: CreateSettings, config: OTLPReceiverConfig,
                 consumers: Mapping[Signal, Consumer], trusted: bool = False):
        """`trusted`: the senders are this collector's own workers, whose requests were
        checked where they entered: they skip the request check."""
        self.id = str(settings.id)
        self.trusted = trusted
        self.config = config
        self.consumers = dict(consumers)
        self.log = settings.logger
        self.metrics = settings.metrics
        # several workers share the ports (the kernel spreads connections); alone, a second
        # collector on the same port must fail instead of silently splitting the traffic
        self.reuse_port = settings.workers > 1
        self._grpc_server: grpc.aio.Server | otlp_grpc.GrpcServer | None = None
        self._grpc_auth: ServerAuthenticator | None = None
        self.grpc_port: int | None = None
        self._http: HttpServer | None = None

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http is not None else None

    async def start(self, host: Host) -> None:
        protocols = self.config.protocols
        if protocols.grpc is not None:
            self._grpc_auth = server_authenticator(host, protocols.grpc.auth)
            await self._start_grpc(protocols.grpc)
        if protocols.http is not None:
            await self._start_http(protocols.http, server_authenticator(host, protocols.http.auth))

    async def shutdown(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.stop()
        if self._grpc_server is not None:
            server, self._grpc_server = self._grpc_server, None
            await server.stop(grace=5)

    # -- shared by every transport --------------------------------------------------------

    async def deliver(self, batch: Batch, transport: str) -> None:
        """Push one checked request into the pipeline, counting accepted/refused items.

        Raises the consumer's PermanentError / RetryableError for the transport to map.
        """
        n = batch.item_count()
        try:
            await self.consumers[batch.signal].consume(batch)
        except PartiallyRejected as exc:
            rejected = min(max(exc.rejected, 0), n)
            self.metrics.receiver_accepted(self.id, transport, batch.signal, n - rejected)
            self.metrics.receiver_refused(self.id, transport, batch.signal, rejected)
            raise
        except (PermanentError, RetryableError):
            self.metrics.receiver_refused(self.id, transport, batch.signal, n)
            raise
        except Exception as exc:  # a bug downstream must not kill the connection silently
            self.metrics.receiver_refused(self.id, transport, batch.signal, n)
            self.log.exception("pipeline failed on a request")
            raise RetryableError(f"internal error: {exc}") from exc
        self.metrics.receiver_accepted(self.id, transport, batch.signal, n)

    def refused_request(self, signal: Signal, transport: str) -> None:
        """A request refused before it could be decoded (its items are unknown)."""
        self.metrics.receiver_refused(self.id, transport, signal, 0)

    # -- HTTP -------------------------------------------------------------------------------

    async def _start_http(self, cfg: HttpSettings, auth: ServerAuthenticator | None) -> None:
        server = HttpServer(cfg, self.consumers, self.deliver, self.log, auth, self.reuse_port)
        await server.start()
        self._http = server
        self.log.info("OTLP HTTP receiver listening", endpoint=cfg.endpoint, port=server.port)

    # -- gRPC -------------------------------------------------------------------------------

    async def _start_grpc(self, cfg: GrpcSettings) -> None:
        routes = {f"/{GRPC_SERVICES[signal]}/Export": self._grpc_route(signal)
                  for signal in self.consumers}
        if otlp_grpc.AVAILABLE:
            server = otlp_grpc.GrpcServer(cfg, routes, self.log, self.reuse_port)
            await server.start()
            self._grpc_server, self.grpc_port = server, server.port
        else:
            self._grpc_server, self.grpc_port = await otlp_grpc.start_aio_server(
                cfg, routes, self.reuse_port)
        self.log.info("OTLP gRPC receiver listening", endpoint=cfg.endpoint, port=self.grpc_port)

    def _checked(self, signal: Signal, request: bytes) -> Batch | otlp_grpc.Reply:
        """The checked request, or the INVALID_ARGUMENT reply for a malformed one or wrong id
        lengths."""
        try:
            return checked_batch(signal, request)
        except MalformedRequest as exc:
            refusal = f"malformed OTLP request: {exc}"
        except InvalidIds as exc:
            refusal = f"invalid OTLP request: {exc}"
        self.refused_request(signal, "grpc")
        return otlp_grpc.Reply(grpc.StatusCode.INVALID_ARGUMENT, refusal)

    def _grpc_route(self, signal: Signal) -> otlp_grpc.Route:
        include_metadata = self.config.protocols.grpc is not None and \
            self.config.protocols.grpc.include_metadata
        Reply, StatusCode = otlp_grpc.Reply, grpc.StatusCode

        async def export(request: bytes, metadata: otlp_grpc.Metadata) -> otlp_grpc.Reply:
            if self._grpc_auth is not None and not self._grpc_auth.authenticate(dict(metadata)):
                self.refused_request(signal, "grpc")
                return Reply(StatusCode.UNAUTHENTICATED, "missing or invalid credentials")
            if self.trusted:
                batch = Batch(signal, raw=request, metadata=forwarded_metadata(metadata))
            else:
                batch = self._checked(signal, request)
                if isinstance(batch, Reply):
                    return batch
            if include_metadata:
                batch.metadata = grpc_metadata(metadata)
            try:
                await self.deliver(batch, "grpc")
            except PartiallyRejected as exc:
                response = signal.response_type()
                setattr(response.partial_success, signal.rejected_field, exc.rejected)
                response.partial_success.error_message = str(exc)
                return Reply(response=response.SerializeToString())
            except PermanentError as exc:
                return Reply(StatusCode.INVALID_ARGUMENT, str(exc))
            except RetryableError as exc:
                return Reply(StatusCode.UNAVAILABLE, str(exc),
                             trailing=retry_info_metadata(str(exc), exc.retry_after))
            return _FULL_SUCCESS

        return export


_FULL_SUCCESS = otlp_grpc.Reply()  # an empty Export*ServiceResponse


def grpc_metadata(metadata) -> Metadata:
    """A request's gRPC metadata as `Metadata` (keys arrive lower-cased). Binary (`-bin`)
    entries are left out: their values are bytes, not text."""
    return Metadata((k, v) for k, v in metadata or () if not k.endswith("-bin"))


def encode_forwarded_metadata(metadata: Metadata) -> tuple[str, bytes]:
    """The gRPC header carrying a batch's metadata to another worker."""
    return FORWARDED_METADATA, json.dumps(dict(metadata), separators=(",", ":")).encode()


def forwarded_metadata(metadata) -> Metadata | None:
    """The metadata another worker forwarded with a batch (`encode_forwarded_metadata`)."""
    for key, value in metadata or ():
        if key == FORWARDED_METADATA:
            return Metadata(json.loads(value))
    return None


def retry_info_metadata(message: str, delay: float | None) -> tuple[tuple[str, bytes], ...]:
    """RetryInfo so SDKs wait `delay` before retrying: inside `grpc-status-details-bin` (the
    google.rpc.Status the Go SDK and collector read) and alone in `google.rpc.retryinfo-bin`
    (what the Python SDK reads)."""
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    if delay is None:
        return (("grpc-status-details-bin", status.SerializeToString()),)
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(delay), nanos=int((delay % 1) * 1e9)))
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", info.SerializeToString()))
