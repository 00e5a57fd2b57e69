"""`otlp` receiver: OTLP over gRPC (grpc.aio, raw bytes in, no per-request stub objects)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from pydantic import Field, model_validator

from otelflow.component import (
    Component,
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    PermanentError,
    RetryableError,
)
from otelflow.config.tls import TLSServerSettings
from otelflow.config.types import ConfigModel
from otelflow.pdata import Batch, Signal

GRPC_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}


class GrpcSettings(ConfigModel):
    endpoint: str = "localhost:4317"
    max_recv_msg_size_mib: int = Field(4, ge=1)
    max_concurrent_streams: int | None = Field(None, ge=1)
    tls: TLSServerSettings | None = None


class Protocols(ConfigModel):
    grpc: GrpcSettings | None = None


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
            if settings is not None:
                yield f"protocols.{name}.endpoint", settings.endpoint


def create(settings: CreateSettings, config: OTLPReceiverConfig,
           consumers: Mapping[Signal, Consumer]) -> OTLPReceiver:
    return OTLPReceiver(settings, config, consumers)


FACTORY = Factory(Kind.RECEIVER, "otlp", OTLPReceiverConfig, create,
                  description="OTLP over gRPC")


class OTLPReceiver(Component):
    """Serves the OTLP export services for the signals it has consumers for."""

    def __init__(self, settings: CreateSettings, config: OTLPReceiverConfig,
                 consumers: Mapping[Signal, Consumer]):
        self.id = str(settings.id)
        self.config = config
        self.consumers = dict(consumers)
        self.log = settings.logger
        self.metrics = settings.metrics
        self._grpc_server: grpc.aio.Server | None = None
        self.grpc_port: int | None = None

    async def start(self, host: Host) -> None:
        if self.config.protocols.grpc is not None:
            await self._start_grpc(self.config.protocols.grpc)

    async def shutdown(self) -> None:
        if self._grpc_server is not None:
            server, self._grpc_server = self._grpc_server, None
            await server.stop(grace=5)

    # -- shared by every transport --------------------------------------------------------

    async def deliver(self, batch: Batch, transport: str) -> None:
        """Push one parsed request into the pipeline, counting accepted/refused items.

        Raises the consumer's PermanentError / RetryableError for the transport to map.
        """
        n = batch.item_count()
        try:
            await self.consumers[batch.signal].consume(batch)
        except (PermanentError, RetryableError):
            self.metrics.receiver_refused(self.id, transport, batch.signal, n)
            raise
        except Exception as exc:  # a bug downstream must not kill the connection silently
            self.metrics.receiver_refused(self.id, transport, batch.signal, n)
            self.log.exception("pipeline failed on a request")
            raise RetryableError(f"internal error: {exc}") from exc
        self.metrics.receiver_accepted(self.id, transport, batch.signal, n)

    # -- gRPC -------------------------------------------------------------------------------

    async def _start_grpc(self, cfg: GrpcSettings) -> None:
        limit = cfg.max_recv_msg_size_mib * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)]
        if cfg.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", cfg.max_concurrent_streams))
        server = grpc.aio.server(options=options)
        handlers = {
            GRPC_SERVICES[signal]: {"Export": grpc.unary_unary_rpc_method_handler(
                self._grpc_handler(signal))}
            for signal in self.consumers
        }
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(name, methods) for name, methods in handlers.items()])
        try:
            port = self._add_port(server, cfg)
        except RuntimeError:  # grpc raises instead of returning 0 in recent versions
            port = 0
        if not port:
            raise OSError(f"cannot listen on {cfg.endpoint} (gRPC): address in use or invalid")
        await server.start()
        self._grpc_server, self.grpc_port = server, port
        self.log.info("OTLP gRPC receiver listening", endpoint=cfg.endpoint, port=port)

    @staticmethod
    def _add_port(server: grpc.aio.Server, cfg: GrpcSettings) -> int:
        if cfg.tls is None:
            return server.add_insecure_port(cfg.endpoint)
        cert, key, client_ca = cfg.tls.read_files()
        credentials = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)
        return server.add_secure_port(cfg.endpoint, credentials)

    def _grpc_handler(self, signal: Signal):
        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                batch = Batch.from_bytes(signal, request)
            except DecodeError as exc:
                self.metrics.receiver_refused(self.id, "grpc", signal, 0)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed OTLP request: {exc}")
            try:
                await self.deliver(batch, "grpc")
            except PermanentError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except RetryableError as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc),
                                    trailing_metadata=retry_info_metadata(str(exc), exc.retry_after))
            return b""  # an empty Export*ServiceResponse: full success

        return export


def retry_info_metadata(message: str, delay: float | None) -> tuple[tuple[str, bytes], ...]:
    """`grpc-status-details-bin` carrying RetryInfo, so SDKs wait `delay` before retrying."""
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    if delay is not None:
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(delay), nanos=int((delay % 1) * 1e9)))
        status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)
