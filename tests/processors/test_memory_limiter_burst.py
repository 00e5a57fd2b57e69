"""A burst 10x above capacity against memory_limiter (limit 200 MiB, spike 40 MiB).

The backend is the bottleneck (slow) during the burst, so the exporter queue grows until the
collector's RSS crosses the soft limit; then senders get UNAVAILABLE and retry. RSS (sampled
every 20 ms) must stay under limit + spike, every request the collector acknowledged must
reach the backend, and once the backend is fast again the accepted throughput recovers.
"""

from __future__ import annotations

import itertools
import threading
import time

import grpc
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelflow.pdata import Batch, Signal
from otelflow.receivers.otlp import GRPC_SERVICES
from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port
from tests.pipeline.delivery_helpers import collector_config, otlp_exporter

MIB = 1024 * 1024
LIMIT_MIB, SPIKE_MIB = 200, 40
SPANS_PER_REQUEST = 500


def template() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="request.id").value.int_value = 0
    scope = rs.scope_spans.add()
    for i in range(SPANS_PER_REQUEST):
        span = scope.spans.add(name="burst", span_id=i.to_bytes(8, "big"),
                               trace_id=(i + 1).to_bytes(16, "big"))
        span.attributes.add(key="payload").value.string_value = f"{i:08d}" * 128  # 1 KiB
    return request


class Senders:
    """Threads sending unique requests as fast as accepted, retrying refused ones."""

    def __init__(self, port: int, threads: int = 4):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.export = self.channel.unary_unary(f"/{GRPC_SERVICES[Signal.TRACES]}/Export")
        self.ids = itertools.count(1)
        self.acknowledged: list[int] = []
        self.refused = 0
        self.other_errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        request = template()
        attribute = request.resource_spans[0].resource.attributes[0].value
        while not self._stop.is_set():
            attribute.int_value = request_id = next(self.ids)
            payload = request.SerializeToString()
            while not self._stop.is_set():
                try:
                    self.export(payload, timeout=10)
                    self.acknowledged.append(request_id)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        self.other_errors.append(exc.code().name)
                    self.refused += 1
                    time.sleep(0.02)

    def run_for(self, seconds: float) -> tuple[int, int]:
        """(requests acknowledged, refusals) while sending for `seconds`."""
        acked, refused = len(self.acknowledged), self.refused
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]
        for t in self._threads:
            t.start()
        time.sleep(seconds)
        self._stop.set()
        for t in self._threads:
            t.join()
        return len(self.acknowledged) - acked, self.refused - refused


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def test_burst_is_refused_retryably_and_nothing_accepted_is_lost():
    port, metrics_port = free_port(), free_port()
    received: dict[int, int] = {}

    def record(batch: Batch) -> None:
        rs = batch.message.resource_spans[0]
        received[rs.resource.attributes[0].value.int_value] = batch.item_count()

    with FakeBackend(record=record) as backend:
        config = collector_config(port, metrics_port, exporters={
            "otlp": otlp_exporter(backend.port, sending_queue={"queue_size": 100_000})},
            processors={"memory_limiter": {"check_interval": "100ms", "limit_mib": LIMIT_MIB,
                                           "spike_limit_mib": SPIKE_MIB}})
        with CollectorProcess(config, wait_port=port) as collector:
            senders = Senders(port)
            baseline, _ = senders.run_for(2.0)
            backend.delay = 0.5  # capacity: 10 consumers / 0.5 s = 20 requests/s
            sampler = RssSampler(collector.proc.pid)
            sampler.start()
            burst, refused = senders.run_for(4.0)
            backend.delay = 0.0
            deadline = time.monotonic() + 30
            while not set(senders.acknowledged) <= received.keys() \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            peak = sampler.stop()
            time.sleep(0.5)
            recovered, refused_after = senders.run_for(2.0)
            deadline = time.monotonic() + 30
            while not set(senders.acknowledged) <= received.keys() \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            assert collector.stop() == 0, collector.logs()

    print(f"baseline {baseline / 2:.0f} req/s; burst offered by 4 senders, accepted "
          f"{burst / 4:.0f} req/s (backend capacity 20 req/s), refused {refused}; "
          f"peak RSS {peak / MIB:.0f} MiB; after: {recovered / 2:.0f} req/s, "
          f"refused {refused_after}")
    assert refused > 0, "the burst should have been refused"
    assert not senders.other_errors, set(senders.other_errors)
    assert peak < (LIMIT_MIB + SPIKE_MIB) * MIB
    lost = set(senders.acknowledged) - received.keys()
    assert not lost, f"{len(lost)} acknowledged requests never arrived"
    assert all(received[r] == SPANS_PER_REQUEST for r in senders.acknowledged)
    assert recovered >= 0.5 * baseline
