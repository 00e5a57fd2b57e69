"""Graceful shutdown on SIGTERM: queues drain until service.shutdown_timeout; what a memory
queue cannot send by then is dropped and counted, a persistent queue keeps it for next start."""

from __future__ import annotations

import re
import time

import yaml

from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port
from tests.pipeline.delivery_helpers import FAST_RETRY, collector_config, otlp_exporter, sdk_tracer


def with_shutdown_timeout(config: str, timeout: str) -> str:
    raw = yaml.safe_load(config)
    raw["service"]["shutdown_timeout"] = timeout
    return yaml.safe_dump(raw)


def send(port: int, n: int) -> set[bytes]:
    provider, sdk = sdk_tracer(port)
    tracer = provider.get_tracer("shutdown")
    for _ in range(n):
        tracer.start_span("op").end()
    provider.shutdown()
    assert len(sdk.acknowledged) == n
    return set(sdk.acknowledged)


def stop_timed(collector: CollectorProcess) -> float:
    started = time.monotonic()
    assert collector.stop() == 0, collector.logs()
    return time.monotonic() - started


def test_sigterm_drains_the_memory_queue_to_a_slow_backend():
    port, metrics_port = free_port(), free_port()
    with FakeBackend(delay=0.2) as backend:
        config = collector_config(port, metrics_port, exporters={
            "otlp": otlp_exporter(backend.port, sending_queue={"num_consumers": 2})})
        with CollectorProcess(with_shutdown_timeout(config, "20s"), wait_port=port) as collector:
            sent = send(port, 5000)  # 10 requests of 500: ~1 s at 2 x 0.2 s
            assert backend.items() < 5000
            took = stop_timed(collector)
    assert set(backend.span_counts()) == sent
    assert took < 10


def test_sigterm_deadline_drops_and_counts_what_a_memory_queue_holds():
    port, metrics_port = free_port(), free_port()
    with FakeBackend() as backend:
        backend.stop()
        config = collector_config(port, metrics_port, exporters={
            "otlp": otlp_exporter(backend.port, retry_on_failure=FAST_RETRY)})
        with CollectorProcess(with_shutdown_timeout(config, "1s"), wait_port=port) as collector:
            send(port, 2000)
            took = stop_timed(collector)
            logs = collector.logs()
    assert 0.9 < took < 8
    match = re.search(r'"items": (\d+)[^\n]*shutdown dropped unsent data|'
                      r'shutdown dropped unsent data[^\n]*"items": (\d+)', logs)
    assert match, logs[-2000:]
    assert int(match.group(1) or match.group(2)) == 2000


def test_sigterm_keeps_the_persistent_queue_for_the_next_start(tmp_path):
    port, metrics_port = free_port(), free_port()
    with FakeBackend() as backend:
        backend.stop()
        config = with_shutdown_timeout(collector_config(port, metrics_port, exporters={
            "otlp": otlp_exporter(backend.port, retry_on_failure=FAST_RETRY,
                                  sending_queue={"storage": "file_storage"})},
            extensions={"file_storage": {"directory": str(tmp_path)}}), "30s")
        with CollectorProcess(config, wait_port=port) as collector:
            sent = send(port, 2000)
            took = stop_timed(collector)  # no waiting for the 30 s deadline: data is on disk
        assert took < 5
        backend.start()
        with CollectorProcess(config, wait_port=port) as collector:
            backend.wait_for_items(len(sent), timeout=15)
            assert collector.stop() == 0
    counts = backend.span_counts()
    assert set(counts) == sent
    assert max(counts.values()) == 1
