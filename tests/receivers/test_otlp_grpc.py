"""OTLP/gRPC receiver status mapping: malformed -> INVALID_ARGUMENT, permanent ->
INVALID_ARGUMENT, backpressure -> UNAVAILABLE with RetryInfo that Go and Python SDKs read.
Each test runs on both servers: the receiver's own (`otlp_grpc`) and grpc.aio, which it uses
when that extension is not built."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from otelflow.component import PermanentError, RetryableError
from otelflow.receivers import otlp_grpc
from otelflow.testing import build
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service


@pytest.fixture(autouse=True, params=["otlp_grpc", "grpc.aio"])
def server(request, monkeypatch):
    monkeypatch.setattr(otlp_grpc, "AVAILABLE", request.param == "otlp_grpc")
    return request.param


CONFIG = """
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}}}
exporters: {{debug: {{}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""


async def call(port: int, body: bytes) -> grpc.aio.AioRpcError | None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        try:
            await export(body, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


@pytest.mark.parametrize(("error", "code"), [
    (None, None),
    (PermanentError("bad data"), grpc.StatusCode.INVALID_ARGUMENT),
    (RetryableError("queue full", 2.5), grpc.StatusCode.UNAVAILABLE),
])
async def test_status_mapping_and_retry_info(error, code):
    port = free_port()
    sink = CaptureExporter(fail=lambda _batch: error)
    async with running_service(CONFIG.format(port=port), {"debug": sink}):
        failure = await call(port, build.traces(build.span("s")).SerializeToString())
        malformed = await call(port, b"\x0a\xff\xff\xff")
    assert malformed is not None and malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    if code is None:
        assert failure is None and sink.items() == 1
        return
    assert failure is not None and failure.code() == code
    metadata = dict(failure.trailing_metadata() or ())
    if code is grpc.StatusCode.UNAVAILABLE:
        status = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert info.retry_delay.seconds == 2 and info.retry_delay.nanos == 500_000_000
        alone = error_details_pb2.RetryInfo.FromString(metadata["google.rpc.retryinfo-bin"])
        assert alone == info


async def test_keepalive_max_connection_age_closes_connections():
    """`keepalive.server_parameters.max_connection_age` reaches gRPC: the server ends an idle
    client's connection once it is older than that (the channel drops out of READY)."""
    port = free_port()
    config = CONFIG.replace(
        'endpoint: "127.0.0.1:{port}"',
        'endpoint: "127.0.0.1:{port}", keepalive: {{server_parameters: '
        '{{max_connection_age: 300ms, max_connection_age_grace: 100ms}}, '
        'enforcement_policy: {{min_time: 1s, permit_without_stream: true}}}}')
    sink = CaptureExporter()
    async with running_service(config.format(port=port), {"debug": sink}), \
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        await export(build.traces(build.span("s")).SerializeToString(), timeout=5)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        for _ in range(40):
            await asyncio.sleep(0.05)
            if channel.get_state() != grpc.ChannelConnectivity.READY:
                break
        assert channel.get_state() != grpc.ChannelConnectivity.READY
        await export(build.traces(build.span("t")).SerializeToString(), timeout=5)  # reconnects
    assert sink.items() == 2


async def test_unix_transport(tmp_path, server):
    path = tmp_path / "otlp.sock"
    config = CONFIG.replace('endpoint: "127.0.0.1:{port}"',
                            f'endpoint: "{path}", transport: unix')
    sink = CaptureExporter()
    async with running_service(config.format(port=0), {"debug": sink}) as service, \
            grpc.aio.insecure_channel(f"unix:{path}") as channel:
        serving = service.receivers["otlp"]._grpc_server
        assert isinstance(serving, otlp_grpc.GrpcServer) == (server == "otlp_grpc")
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        await export(build.traces(build.span("s")).SerializeToString(), timeout=5)
    assert sink.items() == 1
