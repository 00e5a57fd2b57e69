"""prometheusremotewrite: config, wire format and fault handling against a local HTTP server."""

from __future__ import annotations

import asyncio
import time

import cramjam
import pytest
import structlog
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otelflow.component import ComponentID, CreateSettings, Kind, PermanentError
from otelflow.exporters.httpclient import retry_after as parse_retry_after
from otelflow.exporters.prometheus_remote_write import (
    FACTORY,
    Config,
    PrometheusRemoteWriteExporter,
)
from otelflow.exporters.prompb import remote_pb2
from otelflow.pdata import Batch
from otelflow.pipeline.exporterhelper import ExporterChain
from otelflow.registry import Registry
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.process import free_port

EID = "prometheusremotewrite"


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def counter_request(n: int, start: int = 0, ts_ns: int | None = None):
    """`n` points of a cumulative counter `jobs` with a distinct `worker` label each."""
    ts_ns = ts_ns or time.time_ns()
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "svc"), kv("service.instance.id", "i-1")])
    metric = rm.scope_metrics.add().metrics.add(name="jobs", unit="{job}")
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = 2
    for i in range(start, start + n):
        dp = metric.sum.data_points.add(time_unix_nano=ts_ns, as_int=i)
        dp.attributes.append(kv("worker", f"w{i}"))
    return req


class RemoteWriteServer:
    """A local remote-write endpoint: `script` maps attempt numbers (0-based) to a scripted
    (status, headers, text) answer; every other attempt is decoded and accepted."""

    def __init__(self, port: int, script: dict[int, tuple[int, dict[str, str], str]] | None = None,
                 delay: float = 0.0):
        self.port = port
        self.script = dict(script or {})
        self.delay = delay
        self.in_flight = self.max_in_flight = 0
        self.attempts: list[float] = []
        self.accepted: list[remote_pb2.WriteRequest] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    async def handle(self, request: web.Request) -> web.Response:
        attempt = len(self.attempts)
        self.attempts.append(time.monotonic())
        self.headers.append(dict(request.headers))
        body = await request.read()
        if self.delay:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            await asyncio.sleep(self.delay)
            self.in_flight -= 1
        if attempt in self.script:
            status, headers, text = self.script[attempt]
            return web.Response(status=status, headers=headers, text=text)
        raw = cramjam.snappy.decompress_raw(body).read()
        self.accepted.append(remote_pb2.WriteRequest.FromString(raw))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/write", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def samples(self) -> dict[str, float]:
        """worker label -> value over everything accepted (the `jobs_total` series)."""
        out = {}
        for req in self.accepted:
            for ts in req.timeseries:
                labels = {label.name: label.value for label in ts.labels}
                if labels["__name__"] == "jobs_total":
                    for s in ts.samples:
                        out[labels["worker"]] = s.value
        return out


def make_chain(url: str, metrics: SelfMetrics, **overrides) -> tuple[ExporterChain, Config]:
    raw = {"endpoint": url, "retry_on_failure": {"initial_interval": "10ms",
                                                 "max_interval": "50ms",
                                                 "max_elapsed_time": "30s"}}
    raw.update(overrides)
    config = Config.model_validate(raw)
    settings = CreateSettings(ComponentID.parse(EID), Kind.EXPORTER,
                              structlog.get_logger("test"), metrics)
    exporter = PrometheusRemoteWriteExporter(settings, config)
    return ExporterChain(exporter, config, EID, metrics), config


def counter_value(metrics: SelfMetrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name + "_total", labels)
    return value or 0.0


async def deliver(chain: ExporterChain, request) -> None:
    """Start the chain, export one request, drain the queue, stop the exporter."""
    await chain.start(None)
    try:
        await chain.consume(Batch.of(request))
        await chain.shutdown(time.monotonic() + 5)
    finally:
        await chain.exporter.shutdown()


@pytest.fixture
async def server():
    srv = RemoteWriteServer(free_port())
    await srv.start()
    yield srv
    await srv.stop()


# -- config ------------------------------------------------------------------------------

def test_registered_and_defaults_follow_go():
    assert Registry(plugins=False).get(Kind.EXPORTER, EID) is FACTORY
    cfg = Config.model_validate({"endpoint": "http://p:9090/api/v1/write"})
    assert cfg.max_batch_size_bytes == 3_000_000
    assert cfg.remote_write_queue.queue_size == 10000
    assert cfg.remote_write_queue.num_consumers == 5
    assert cfg.sending_queue.num_consumers == 1 and cfg.sending_queue.queue_size == 10000
    assert cfg.retry_on_failure.initial_interval == 0.05
    assert cfg.retry_on_failure.max_interval == 0.2
    assert cfg.target_info.enabled and not cfg.resource_to_telemetry_conversion.enabled
    assert cfg.add_metric_suffixes and not cfg.send_metadata


def test_remote_write_queue_maps_to_sending_queue():
    cfg = Config.model_validate({"endpoint": "http://p/w", "remote_write_queue": {
        "enabled": False, "queue_size": 7, "num_consumers": 3}})
    assert not cfg.sending_queue.enabled and cfg.sending_queue.queue_size == 7


@pytest.mark.parametrize(("header", "expected"), [
    ("1", 1.0), (" 30 ", 30.0), ("", None), ("soon", None)])
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_retry_after_http_date():
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3.0 < parse_retry_after(when) <= 5.0


# -- wire ----------------------------------------------------------------------------------

async def test_headers_and_body(server):
    chain, _ = make_chain(server.url, SelfMetrics(), headers={"X-Scope-OrgID": "tenant-1"},
                          external_labels={"cluster": "c1"})
    await deliver(chain, counter_request(3))
    headers = server.headers[0]
    assert headers["Content-Encoding"] == "snappy"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["X-Scope-OrgID"] == "tenant-1"
    series = server.accepted[0].timeseries
    first = [(label.name, label.value) for label in series[0].labels]
    assert first == [("__name__", "jobs_total"), ("cluster", "c1"), ("instance", "i-1"),
                     ("job", "svc"), ("worker", "w0")]
    assert server.samples() == {"w0": 0.0, "w1": 1.0, "w2": 2.0}


async def test_proxy_url_carries_the_writes(server):
    chain, _ = make_chain("http://prometheus.invalid:9090/api/v1/write", SelfMetrics(),
                          proxy_url=server.url.rsplit("/api/", 1)[0])
    await deliver(chain, counter_request(2))
    assert server.headers[0]["Host"] == "prometheus.invalid:9090"
    assert server.samples() == {"w0": 0.0, "w1": 1.0}


async def test_split_under_max_batch_size(server):
    metrics = SelfMetrics()
    chain, _ = make_chain(server.url, metrics, max_batch_size_bytes=2000,
                          target_info={"enabled": False})
    await deliver(chain, counter_request(200))
    assert len(server.accepted) > 5
    assert all(len(r.SerializeToString()) <= 2000 for r in server.accepted)
    assert len(server.samples()) == 200


async def test_requests_of_one_export_go_out_num_consumers_at_a_time():
    srv = RemoteWriteServer(free_port(), delay=0.2)
    await srv.start()
    chain, _ = make_chain(srv.url, SelfMetrics(), max_batch_size_bytes=1000,
                          target_info={"enabled": False}, remote_write_queue={"num_consumers": 4})
    await chain.start(None)
    try:
        started = time.monotonic()
        await chain.consume(Batch.of(counter_request(200)))
        await chain.shutdown(time.monotonic() + 10)
        elapsed = time.monotonic() - started
    finally:
        await srv.stop()
    requests = len(srv.accepted)
    assert requests >= 12 and len(srv.samples()) == 200
    assert srv.max_in_flight == 4
    assert elapsed < requests * 0.2 / 2  # sequential sending would take requests * 0.2 s


async def test_retry_resends_only_the_failed_requests():
    srv = RemoteWriteServer(free_port(), {1: (503, {}, "busy")})  # the 2nd request fails once
    await srv.start()
    metrics = SelfMetrics()
    chain, _ = make_chain(srv.url, metrics, max_batch_size_bytes=2000,
                          target_info={"enabled": False})
    await chain.start(None)
    try:
        await chain.consume(Batch.of(counter_request(200)))
        await chain.shutdown(time.monotonic() + 5)
    finally:
        await srv.stop()
    assert len(srv.samples()) == 200
    assert sum(len(r.timeseries) for r in srv.accepted) == 200  # nothing sent twice
    assert len(srv.attempts) == len(srv.accepted) + 1
    assert counter_value(metrics, "otelcol_exporter_prometheusremotewrite_translated_time_series",
                         exporter=EID) == 200


# -- faults --------------------------------------------------------------------------------

async def test_500_then_200_delivered_once():
    srv = RemoteWriteServer(free_port(), {0: (500, {}, "boom")})
    await srv.start()
    metrics = SelfMetrics()
    chain, _ = make_chain(srv.url, metrics)
    await chain.start(None)
    try:
        await chain.consume(Batch.of(counter_request(5)))
        await chain.shutdown(time.monotonic() + 5)
    finally:
        await srv.stop()
    assert len(srv.attempts) == 2
    assert len(srv.accepted) == 1
    assert srv.samples() == {f"w{i}": float(i) for i in range(5)}
    assert counter_value(metrics, "otelcol_exporter_sent_metric_points", exporter=EID) == 5


async def test_429_retry_after_is_honoured():
    srv = RemoteWriteServer(free_port(), {0: (429, {"Retry-After": "1"}, "slow down")})
    await srv.start()
    chain, _ = make_chain(srv.url, SelfMetrics())
    await chain.start(None)
    try:
        await chain.consume(Batch.of(counter_request(2)))
        await chain.shutdown(time.monotonic() + 10)
    finally:
        await srv.stop()
    assert len(srv.attempts) == 2 and len(srv.accepted) == 1
    assert srv.attempts[1] - srv.attempts[0] >= 0.95  # retry interval is 10ms; the header won


async def test_400_dropped_counted_not_retried():
    srv = RemoteWriteServer(free_port(), {i: (400, {}, "out of order sample") for i in range(3)})
    await srv.start()
    metrics = SelfMetrics()
    chain, _ = make_chain(srv.url, metrics, remote_write_queue={"enabled": False})
    await chain.start(None)
    try:
        with pytest.raises(PermanentError, match="HTTP 400: out of order sample"):
            await chain.consume(Batch.of(counter_request(4)))
        await asyncio.sleep(0.2)
    finally:
        await chain.shutdown()
        await srv.stop()
    assert len(srv.attempts) == 1
    assert not srv.accepted
    assert counter_value(metrics, "otelflow_dropped_items", component=EID,
                         otel_signal="metrics", reason="permanent_error") == 4
    assert counter_value(metrics, "otelcol_exporter_send_failed_metric_points", exporter=EID) == 4


async def test_server_down_10s_then_back_delivers_everything():
    srv = RemoteWriteServer(free_port())
    metrics = SelfMetrics()
    chain, _ = make_chain(srv.url, metrics, retry_on_failure={
        "initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": "60s"})
    await chain.start(None)
    try:
        ts = time.time_ns()
        for i in range(10):
            await chain.consume(Batch.of(counter_request(10, start=i * 10, ts_ns=ts + i)))
        await asyncio.sleep(10)
        assert not srv.attempts  # nothing listening yet
        await srv.start()
        deadline = time.monotonic() + 15
        while len(srv.samples()) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await chain.shutdown(time.monotonic() + 5)
    finally:
        await srv.stop()
    assert srv.samples() == {f"w{i}": float(i) for i in range(100)}
    assert counter_value(metrics, "otelcol_exporter_sent_metric_points", exporter=EID) == 100


async def test_delta_sum_points_refused_and_counted(server):
    metrics = SelfMetrics()
    chain, _ = make_chain(server.url, metrics, remote_write_queue={"enabled": False})
    await chain.start(None)
    req = counter_request(2)
    delta = req.resource_metrics[0].scope_metrics[0].metrics.add(name="d")
    delta.sum.aggregation_temporality = 1
    delta.sum.is_monotonic = True
    delta.sum.data_points.add(time_unix_nano=time.time_ns(), as_int=1)
    try:
        await chain.consume(Batch.of(req))
    finally:
        await chain.shutdown()
    assert counter_value(metrics, "otelflow_dropped_items", component=EID,
                         otel_signal="metrics", reason="unsupported_metric") == 1
    names = {label.value for ts in server.accepted[0].timeseries for label in ts.labels
             if label.name == "__name__"}
    assert names == {"jobs_total"}
