"""Fan-out isolation: an exporter whose server never answers fills only its own queue.

One collector fans out to two otlp exporters. Load runs at a steady 300 requests/s (150k
spans/s, well below what the healthy backend absorbs, so its queue stays near empty) while the
second backend answers normally, then while it hangs on every request (each attempt waits for the
exporter's timeout). Meanwhile the hung exporter's queue must be filling while the healthy
exporter's stays a small fraction of it, and the healthy exporter's delivery rate (best 1 s window
of each phase) must stay within 20% of its rate with no slow exporter. A blocked fan-out
would show as a rate near zero; the margin absorbs the noise of a shared 2-core machine,
where one CI run measured a 0.72 ratio with 2.5 s phases, and a whole phase can be slowed
down by a neighbour.
"""

from __future__ import annotations

import threading
import time

import grpc

from otelflow.exporters.otlp import retry_delay
from otelflow.pdata import Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port
from tests.pipeline.delivery_helpers import (
    collector_config,
    metric_sum,
    otlp_exporter,
    scrape,
    spans_batch,
)

PHASE = 4.0
SPANS_PER_REQUEST = 500


class Load:
    """Senders pushing pre-serialized requests, each at most `per_second` requests a second
    (0: as fast as the collector takes them). Paced below what the healthy backend absorbs,
    its exporter's queue stays near empty unless something holds it up."""

    def __init__(self, port: int, senders: int = 3, per_second: float = 0):
        self.payload = spans_batch(0, SPANS_PER_REQUEST).to_bytes()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.export = self.channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
        self.refused = 0
        self.interval = 1 / per_second if per_second else 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(senders)]

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += self.interval
            if next_at > time.monotonic():
                time.sleep(next_at - time.monotonic())
            try:
                self.export(self.payload, timeout=5)
            except grpc.RpcError:
                self.refused += 1
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.channel.close()


def rate(backend: FakeBackend, seconds: float, window: float = 1.0) -> float:
    """The best rate over any `window` within `seconds`: other load on a shared machine only
    ever slows a window down, so the best one is the steadiest estimate of what we can do."""
    samples = [(time.monotonic(), backend.items())]
    while samples[-1][0] - samples[0][0] < seconds:
        time.sleep(0.1)
        samples.append((time.monotonic(), backend.items()))
    best = 0.0
    for i, (t0, n0) in enumerate(samples):
        for t1, n1 in samples[i + 1:]:
            if t1 - t0 >= window:
                best = max(best, (n1 - n0) / (t1 - t0))
                break
    return best


def queue_size(samples: dict, exporter: str) -> float:
    return metric_sum(samples, "otelcol_exporter_queue_size", exporter=exporter)


def test_a_dead_exporter_does_not_slow_the_other(tmp_path):
    port, metrics_port = free_port(), free_port()
    with FakeBackend() as healthy, FakeBackend() as other:
        queue = {"queue_size": 20_000}  # never full within a phase: nothing is refused
        config = collector_config(port, metrics_port, exporters={
            "otlp/healthy": otlp_exporter(healthy.port, sending_queue=queue),
            "otlp/other": otlp_exporter(other.port, sending_queue=queue, timeout="10s"),
        })
        with CollectorProcess(config, wait_port=port) as collector, \
                Load(port, per_second=100) as load:
            time.sleep(1.0)  # warm up
            baseline = rate(healthy, PHASE)
            other.mode = "hang"
            time.sleep(0.5)
            with_dead = rate(healthy, PHASE)
            samples = scrape(metrics_port)
            refused = load.refused
            other.mode = "ok"
            collector.stop(timeout=1)
    queued = queue_size(samples, "otlp/other")
    healthy_queue = queue_size(samples, "otlp/healthy")
    print(f"healthy exporter: {baseline:,.0f} spans/s alone, {with_dead:,.0f} spans/s "
          f"next to a dead one ({with_dead / baseline:.2f}); queues: dead {queued:.0f}, "
          f"healthy {healthy_queue:.0f} requests")
    assert baseline > 5_000
    assert with_dead >= 0.8 * baseline
    assert queued >= 10, "the dead exporter's queue should be filling"
    # both exporters are offered the same requests: a healthy exporter held up by the dead one
    # would queue about as many; one scrape can catch a burst of ~100 in flight
    assert healthy_queue * 10 <= queued, "the healthy queue backs up like the dead one"
    assert refused == 0


def test_a_full_queue_answers_unavailable_with_a_retry_delay():
    port, metrics_port = free_port(), free_port()
    with FakeBackend() as backend:
        backend.mode = "hang"
        config = collector_config(port, metrics_port, exporters={
            "otlp": otlp_exporter(backend.port, timeout="30s",
                                  sending_queue={"queue_size": 3, "num_consumers": 1})})
        with CollectorProcess(config, wait_port=port) as collector:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            export = channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
            payload = spans_batch(0, 10).to_bytes()
            for _ in range(4):  # one in flight (hung) + three queued
                export(payload, timeout=5)
                time.sleep(0.1)
            try:
                export(payload, timeout=5)
                raise AssertionError("a full queue must refuse")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert "sending queue of exporter otlp is full" in exc.details()
                assert retry_delay(exc) == 1.0
            samples = scrape(metrics_port)
            channel.close()
            backend.mode = "ok"
            collector.stop(timeout=1)
    assert metric_sum(samples, "otelcol_exporter_enqueue_failed_spans_total") == 10
    assert metric_sum(samples, "otelcol_receiver_refused_spans_total") == 10
    assert metric_sum(samples, "otelcol_receiver_accepted_spans_total") == 40
