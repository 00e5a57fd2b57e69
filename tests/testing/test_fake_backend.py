"""The fault-test backend answers as told over gRPC and HTTP, and records what it accepted."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
import pytest

from otelflow.exporters.otlp import retry_delay
from otelflow.pdata import Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.fake_backend import FakeBackend
from tests.pipeline.delivery_helpers import spans_batch


def post(backend: FakeBackend, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{backend.http_port}/v1/traces", body,
                                     {"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_grpc_and_http_modes():
    body = spans_batch(0, 3).to_bytes()
    with FakeBackend() as backend:
        export = grpc.insecure_channel(f"127.0.0.1:{backend.port}").unary_unary(
            f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
        export(body, timeout=5)
        assert post(backend, body)[0] == 200
        backend.retry_after = 2.0
        backend.fail_next(2, "unavailable")
        with pytest.raises(grpc.RpcError) as info:
            export(body, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay(info.value) == 2.0
        status, headers = post(backend, body)
        assert (status, headers["Retry-After"]) == (503, "2")
        backend.mode = "invalid"
        assert post(backend, body)[0] == 400
        with pytest.raises(grpc.RpcError) as info:
            export(body, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        backend.mode = "hang"
        with pytest.raises(grpc.RpcError) as info:
            export(body, timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        backend.stop()
        with pytest.raises(grpc.RpcError) as info:
            export(body, timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(backend.attempts) == 7
    assert backend.span_counts() == {i.to_bytes(8, "big"): 2 for i in range(3)}
