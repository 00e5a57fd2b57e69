"""The `otlp` (gRPC) exporter's connection settings: wait_for_ready, keepalive, authority."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from otelflow.component import ComponentID, CreateSettings, Kind, RetryableError
from otelflow.exporters.otlp import OTLPExporterConfig, create
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import free_port
from tests.pipeline.delivery_helpers import spans_batch


def exporter(port: int, **config):
    settings = CreateSettings(ComponentID("otlp"), Kind.EXPORTER,
                              component_logger("exporter", "otlp"), SelfMetrics())
    return create(settings, OTLPExporterConfig(endpoint=f"127.0.0.1:{port}",
                                               tls={"insecure": True}, **config))


@pytest.mark.parametrize("wait_for_ready", [True, False])
async def test_wait_for_ready_rides_out_a_backend_that_is_not_up_yet(wait_for_ready):
    port = free_port()
    exp = exporter(port, wait_for_ready=wait_for_ready, timeout="5s")
    await exp.start(None)
    backend = FakeBackend(port=port)
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, backend.start)
    started = time.monotonic()
    try:
        if wait_for_ready:
            await exp.export(spans_batch(0, 2))
            assert backend.span_counts() == {i.to_bytes(8, "big"): 1 for i in range(2)}
        else:
            with pytest.raises(RetryableError):
                await exp.export(spans_batch(0, 2))
            assert time.monotonic() - started < 0.5  # failed at once, before the backend
    finally:
        await exp.shutdown()
        await asyncio.sleep(0.6)
        backend.stop()


async def test_keepalive_and_authority_become_channel_arguments(monkeypatch):
    seen = []
    real = grpc.aio.insecure_channel

    def recording(target, options=None, compression=None):
        seen.append(dict(options or ()))
        return real(target, options, compression)

    monkeypatch.setattr(grpc.aio, "insecure_channel", recording)
    exp = exporter(free_port(), authority="gw.example:443",
                   keepalive={"time": "30s", "timeout": "5s", "permit_without_stream": True})
    await exp.start(None)
    await exp.shutdown()
    assert seen[0]["grpc.default_authority"] == "gw.example:443"
    assert (seen[0]["grpc.keepalive_time_ms"], seen[0]["grpc.keepalive_timeout_ms"],
            seen[0]["grpc.keepalive_permit_without_calls"]) == (30_000, 5_000, 1)
