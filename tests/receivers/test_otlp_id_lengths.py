"""Protobuf requests with a trace id that is not 16 bytes or a span id that is not 8 are refused
(gRPC INVALID_ARGUMENT, HTTP 400), as by the Go collector; empty ids are fine."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from google.rpc import status_pb2

from otelflow.pdata import Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.data import sample_request
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service

PROTO = {"Content-Type": "application/x-protobuf"}


def config(grpc_port: int, http_port: int) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
exporters:
  debug: {{}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
    logs: {{receivers: [otlp], exporters: [debug]}}
"""


def spans(**fields) -> bytes:
    request = sample_request(Signal.TRACES, 3)
    span = request.resource_spans[0].scope_spans[0].spans[1]
    for name, value in fields.items():
        if name.startswith("link_"):
            link = span.links[0] if span.links else span.links.add()
            setattr(link, name[5:], value)
        else:
            setattr(span, name, value)
    return request.SerializeToString()


def logs(**fields) -> bytes:
    request = sample_request(Signal.LOGS, 3)
    record = request.resource_logs[0].scope_logs[0].log_records[2]
    for name, value in fields.items():
        setattr(record, name, value)
    return request.SerializeToString()


SPAN = "resource_spans[0].scope_spans[0].spans[1]"
BAD = [
    (Signal.TRACES, spans(trace_id=b"t" * 10), f"{SPAN}.trace_id must be 16 bytes, got 10"),
    (Signal.TRACES, spans(span_id=b"s" * 16), f"{SPAN}.span_id must be 8 bytes, got 16"),
    (Signal.TRACES, spans(parent_span_id=b"p"), f"{SPAN}.parent_span_id must be 8 bytes, got 1"),
    (Signal.TRACES, spans(link_trace_id=b"l" * 15),
     f"{SPAN}.links[0].trace_id must be 16 bytes, got 15"),
    (Signal.LOGS, logs(span_id=b"s" * 9),
     "resource_logs[0].scope_logs[0].log_records[2].span_id must be 8 bytes, got 9"),
]
GOOD = [
    (Signal.TRACES, spans(trace_id=b"", span_id=b"", parent_span_id=b"")),
    (Signal.TRACES, spans(parent_span_id=b"p" * 8, link_trace_id=b"l" * 16,
                          link_span_id=b"k" * 8)),
    (Signal.LOGS, logs(trace_id=b"", span_id=b"")),
    (Signal.LOGS, logs(trace_id=b"t" * 16, span_id=b"s" * 8)),
]


@pytest.fixture
async def collector():
    grpc_port, http_port = free_port(), free_port()
    capture = CaptureExporter()
    async with running_service(config(grpc_port, http_port), {"debug": capture}), \
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, \
            aiohttp.ClientSession() as session:
        yield channel, f"http://127.0.0.1:{http_port}", session, capture


async def test_bad_ids_refused_over_grpc(collector):
    channel, _, _, capture = collector
    for signal, body, message in BAD:
        export = channel.unary_unary(f"/{GRPC_SERVICES[signal]}/Export")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export(body, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()
    assert not capture.batches


async def test_bad_ids_refused_over_http(collector):
    _, url, session, capture = collector
    for signal, body, message in BAD:
        async with session.post(f"{url}/v1/{signal.value}", data=body, headers=PROTO) as response:
            assert response.status == 400
            status = status_pb2.Status.FromString(await response.read())
            assert message in status.message
    assert not capture.batches


async def test_empty_and_valid_ids_accepted(collector):
    channel, url, session, capture = collector
    for signal, body in GOOD:
        export = channel.unary_unary(f"/{GRPC_SERVICES[signal]}/Export")
        await export(body, timeout=5)
        async with session.post(f"{url}/v1/{signal.value}", data=body, headers=PROTO) as response:
            assert response.status == 200
    assert len(capture.batches) == 2 * len(GOOD)
