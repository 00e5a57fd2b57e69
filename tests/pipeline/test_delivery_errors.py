"""Error handling through a real collector, over the otlp (gRPC) and otlphttp exporters:
permanent errors (INVALID_ARGUMENT / 400) are dropped at once and counted, UNAVAILABLE / 503
are retried with the configured exponential backoff, and a server's RetryInfo / Retry-After
delay is honoured. The backend is a fake OTLP server the test scripts."""

from __future__ import annotations

import itertools
import time

import pytest

from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port
from tests.pipeline.delivery_helpers import (
    collector_config,
    metric_sum,
    otlp_exporter,
    scrape,
    sdk_tracer,
)

RETRY = {"initial_interval": "200ms", "multiplier": 2, "randomization_factor": 0,
         "max_interval": "5s", "max_elapsed_time": "60s"}


def exporter_for(protocol: str, backend: FakeBackend) -> dict:
    if protocol == "grpc":
        return {"otlp": otlp_exporter(backend.port, retry_on_failure=RETRY)}
    return {"otlphttp": {"endpoint": f"http://127.0.0.1:{backend.http_port}",
                         "compression": "none", "retry_on_failure": RETRY}}


@pytest.fixture(scope="module", params=["grpc", "http"])
def setup(request):
    """(collector port, metrics port, backend, protocol): otlp or otlphttp exporter."""
    port, metrics_port = free_port(), free_port()
    with FakeBackend() as backend:
        config = collector_config(port, metrics_port, exporter_for(request.param, backend))
        with CollectorProcess(config, wait_port=port) as collector:
            yield port, metrics_port, backend, request.param
            assert collector.stop() == 0, collector.logs()


def send_spans(port: int, n: int) -> set[bytes]:
    provider, sdk = sdk_tracer(port, schedule_delay_millis=5000)
    tracer = provider.get_tracer("errors")
    for _ in range(n):
        tracer.start_span("op").end()
    provider.shutdown()  # one request of n spans
    assert len(sdk.acknowledged) == n
    return set(sdk.acknowledged)


def attempts_after(backend: FakeBackend, start: int, n: int, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while len(backend.attempts) < start + n and time.monotonic() < deadline:
        time.sleep(0.02)
    return backend.attempts[start:]


def test_permanent_error_is_dropped_without_retry(setup):
    """INVALID_ARGUMENT over gRPC, 400 over HTTP."""
    port, metrics_port, backend, _ = setup
    backend.mode = "invalid"
    try:
        before = len(backend.attempts)
        send_spans(port, 20)
        attempts_after(backend, before, 1, timeout=5)
        time.sleep(1.0)  # retries would have happened at 200 ms and 600 ms
        assert len(backend.attempts) - before == 1
    finally:
        backend.mode = "ok"
    samples = scrape(metrics_port)
    assert metric_sum(samples, "otelflow_dropped_items_total", reason="permanent_error") == 20
    assert metric_sum(samples, "otelcol_exporter_send_failed_spans_total") == 20


def test_unavailable_is_retried_with_exponential_backoff(setup):
    """UNAVAILABLE over gRPC, 503 over HTTP."""
    port, _, backend, _ = setup
    before = len(backend.attempts)
    backend.fail_next(4, "unavailable")
    sent = send_spans(port, 10)
    times = attempts_after(backend, before, 5, timeout=10)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print("measured backoff (s):", [round(g, 3) for g in gaps])
    assert len(gaps) == 4
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8, 1.6), strict=True):
        assert expected - 0.02 <= gap <= expected + 0.25, gaps
    deadline = time.monotonic() + 5
    while not sent <= set(backend.span_counts()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(backend.span_counts()[s] == 1 for s in sent)


def test_server_retry_info_delay_is_honoured(setup):
    """RetryInfo over gRPC, Retry-After (whole seconds) over HTTP."""
    port, _, backend, protocol = setup
    before = len(backend.attempts)
    backend.retry_after = 1.5 if protocol == "grpc" else 1
    backend.fail_next(1, "unavailable")
    try:
        send_spans(port, 5)
        times = attempts_after(backend, before, 2, timeout=10)
    finally:
        backend.retry_after = None
    assert len(times) == 2
    expected = 1.5 if protocol == "grpc" else 1.0
    assert expected <= times[1] - times[0] <= expected + 0.4  # not the 200 ms backoff
