"""`include_metadata` on both otlp protocols: a real gRPC / HTTP client's metadata or headers
(keys lower-cased) ride with the batch; off (the default), nothing is recorded."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from otelflow.pdata import Metadata, Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.data import sample_request
from otelflow.testing.process import free_port
from otelflow.testing.sink import CaptureExporter, running_service


def yaml(grpc_port: int, http_port: int, include: bool | None) -> str:
    flag = "" if include is None else f", include_metadata: {str(include).lower()}"
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"{flag}}}
      http: {{endpoint: "127.0.0.1:{http_port}"{flag}}}
exporters: {{debug: {{}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}
"""


async def send_both(grpc_port: int, http_port: int) -> None:
    body = sample_request(Signal.TRACES, 2).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        export = channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
        await export(body, timeout=5, metadata=(
            ("x-tenant", "acme"), ("x-team", "a"), ("x-team", "b"), ("trace-bin", b"\x00\x01")))
    headers = {"Content-Type": "application/x-protobuf", "X-Tenant": "globex"}
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{http_port}/v1/traces", data=body, headers=headers) as response:
        assert response.status == 200


async def test_records_grpc_metadata_and_http_headers():
    grpc_port, http_port = free_port(), free_port()
    capture = CaptureExporter()
    async with running_service(yaml(grpc_port, http_port, True), {"debug": capture}):
        await send_both(grpc_port, http_port)
        await capture.wait_items(4)
    from_grpc, from_http = capture.batches
    assert from_grpc.metadata["x-tenant"] == ("acme",)
    assert from_grpc.metadata["x-team"] == ("a", "b")  # repeated keys keep every value, in order
    assert "trace-bin" not in from_grpc.metadata  # binary values are not text
    assert from_http.metadata["x-tenant"] == ("globex",)  # sent as X-Tenant: keys lower-cased
    assert from_http.metadata.values_of("Content-Type") == ("application/x-protobuf",)


@pytest.mark.parametrize("include", [None, False])
async def test_nothing_recorded_when_off(include):
    grpc_port, http_port = free_port(), free_port()
    capture = CaptureExporter()
    async with running_service(yaml(grpc_port, http_port, include), {"debug": capture}):
        await send_both(grpc_port, http_port)
        await capture.wait_items(4)
    assert [b.metadata for b in capture.batches] == [None, None]


def test_metadata_is_immutable_hashable_and_case_insensitive():
    a = Metadata([("X-Tenant", "acme"), ("x-team", "a"), ("X-TEAM", "b")])
    assert dict(a) == {"x-tenant": ("acme",), "x-team": ("a", "b")}
    assert a == Metadata({"x-team": ["a", "b"], "x-tenant": ["acme"]})
    assert hash(a) == hash(Metadata({"x-team": ["a", "b"], "x-tenant": ["acme"]}))
    assert a != Metadata({"x-team": ["b", "a"], "x-tenant": ["acme"]})
    assert a.values_of("X-Tenant") == ("acme",) and a.values_of("missing") == ()
    with pytest.raises(TypeError):
        a["x-tenant"] = ("other",)  # type: ignore[index]
