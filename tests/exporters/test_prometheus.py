"""prometheus (pull) exporter: exposition, expiry, OpenMetrics, scraped by a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request

import aiohttp
import pytest
import structlog
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.exporters.prometheus import FACTORY, Config, PrometheusExporter
from otelflow.pdata import Batch
from otelflow.registry import Registry
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.process import CollectorProcess, free_port
from otelflow.testing.prometheus import PrometheusServer

TS = 1_700_000_000_000_000_000


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def sample_request(orders: int = 5, flags: int = 0) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "shop"), kv("host.name", "n1")])
    scope = rm.scope_metrics.add()
    counter = scope.metrics.add(name="orders", unit="{order}", description='Orders "placed"')
    counter.sum.is_monotonic, counter.sum.aggregation_temporality = True, 2
    dp = counter.sum.data_points.add(time_unix_nano=TS, as_int=orders, flags=flags)
    dp.attributes.append(kv("method", 'card\n"x"'))
    hist = scope.metrics.add(name="latency", unit="s")
    hist.histogram.aggregation_temporality = 2
    hist.histogram.data_points.add(time_unix_nano=TS, count=3, sum=1.5, explicit_bounds=[0.5, 1],
                                   bucket_counts=[1, 1, 1])
    return req


def make(metrics: SelfMetrics | None = None, **raw) -> PrometheusExporter:
    config = Config.model_validate({"endpoint": "127.0.0.1:0", **raw})
    settings = CreateSettings(ComponentID.parse("prometheus"), Kind.EXPORTER,
                              structlog.get_logger("test"), metrics or SelfMetrics())
    return PrometheusExporter(settings, config)


def test_registered_with_go_defaults():
    assert Registry(plugins=False).get(Kind.EXPORTER, "prometheus") is FACTORY
    cfg = Config.model_validate({"endpoint": "0.0.0.0:8889"})
    assert cfg.metric_expiration == 300.0 and not cfg.send_timestamps
    assert not cfg.enable_open_metrics and cfg.add_metric_suffixes
    assert list(cfg.listen_endpoints()) == [("endpoint", "0.0.0.0:8889")]


async def test_text_exposition():
    exporter = make(const_labels={"env": "ci"})
    await exporter.export(Batch.of(sample_request()))
    text = exporter.store.render(openmetrics=False, timestamps=False)
    assert text == (
        "# TYPE latency_seconds histogram\n"
        'latency_seconds_bucket{env="ci",job="shop",le="0.5"} 1\n'
        'latency_seconds_bucket{env="ci",job="shop",le="1"} 2\n'
        'latency_seconds_bucket{env="ci",job="shop",le="+Inf"} 3\n'
        'latency_seconds_sum{env="ci",job="shop"} 1.5\n'
        'latency_seconds_count{env="ci",job="shop"} 3\n'
        '# HELP orders_total Orders "placed"\n'
        "# TYPE orders_total counter\n"
        'orders_total{env="ci",job="shop",method="card\\n\\"x\\""} 5\n'
        "# HELP target_info Target metadata\n"
        "# TYPE target_info gauge\n"
        'target_info{env="ci",host_name="n1",job="shop"} 1\n')


async def test_latest_value_wins_and_staleness_removes():
    exporter = make()
    await exporter.export(Batch.of(sample_request(5)))
    await exporter.export(Batch.of(sample_request(9)))
    text = exporter.store.render(False, False)
    assert 'orders_total{job="shop",method="card\\n\\"x\\""} 9\n' in text
    await exporter.export(Batch.of(sample_request(9, flags=1)))
    assert "orders_total{" not in exporter.store.render(False, False)


async def test_metric_expiration():
    exporter = make(metric_expiration="200ms")
    await exporter.export(Batch.of(sample_request()))
    assert "orders_total" in exporter.store.render(False, False)
    await asyncio.sleep(0.3)
    assert exporter.store.render(False, False) == "\n"


async def test_exponential_histogram_refused_and_counted():
    metrics = SelfMetrics()
    exporter = make(metrics)
    req = sample_request()
    exp = req.resource_metrics[0].scope_metrics[0].metrics.add(name="e")
    exp.exponential_histogram.aggregation_temporality = 2
    exp.exponential_histogram.data_points.add(time_unix_nano=TS, count=1)
    await exporter.export(Batch.of(req))
    assert metrics.registry.get_sample_value("otelflow_dropped_items_total", {
        "component": "prometheus", "otel_signal": "metrics",
        "reason": "unsupported_metric"}) == 1


async def test_served_over_http_with_openmetrics_on_request():
    exporter = make(enable_open_metrics=True, send_timestamps=True)
    await exporter.start(None)
    try:
        await exporter.export(Batch.of(sample_request()))
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await resp.text()
            headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with session.get(url, headers=headers) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                om = await resp.text()
    finally:
        await exporter.shutdown()
    assert 'orders_total{job="shop",method="card\\n\\"x\\""} 5 1700000000000\n' in text
    assert "# TYPE orders counter\n" in om
    assert 'orders_total{job="shop",method="card\\n\\"x\\""} 5 1700000000.000\n' in om
    assert "# TYPE target info\n" in om
    assert om.endswith("# EOF\n")


# -- a real Prometheus scrapes the exporter --------------------------------------------------

@pytest.fixture
def prometheus_scraping():
    """Start Prometheus scraping 127.0.0.1:<port>/metrics every second; yield (base, port)."""
    target = free_port()
    config = ("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
              "scrape_configs:\n  - job_name: otelflow\n    honor_labels: true\n"
              f"    static_configs:\n      - targets: ['127.0.0.1:{target}']\n")
    with PrometheusServer(config) as prom:
        yield prom.url, target


def query(base: str, promql: str) -> list[dict]:
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.load(resp)["data"]["result"]
    except OSError:
        return []


COLLECTOR = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
exporters:
  prometheus:
    endpoint: 127.0.0.1:{target}
    const_labels:
      env: ci
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics: {{receivers: [otlp], exporters: [prometheus]}}
"""


def send_with_sdk(port: int) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
        export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "shop",
                                                       "service.instance.id": "i-9"}),
                             metric_readers=[reader],
                             views=[View(instrument_name="latency", aggregation=(
                                 ExplicitBucketHistogramAggregation([0.5, 1])))])
    meter = provider.get_meter("test")
    meter.create_counter("orders", unit="{order}").add(7, {"method": "card"})
    latency = meter.create_histogram("latency", unit="s")
    for value in (0.2, 0.7, 3.0):
        latency.record(value)
    assert provider.force_flush(10_000)
    provider.shutdown()


def test_sdk_to_collector_scraped_by_real_prometheus(prometheus_scraping):
    """SDK -> OTLP gRPC -> otelflow (prometheus exporter, from YAML) <- scraped by Prometheus."""
    base, target = prometheus_scraping
    grpc = free_port()
    with CollectorProcess(COLLECTOR.format(grpc=grpc, target=target), wait_port=grpc) as proc:
        send_with_sdk(grpc)
        deadline = time.monotonic() + 20
        while not (rows := query(base, "orders_total")):
            assert time.monotonic() < deadline, proc.logs()
            time.sleep(0.25)
        buckets = query(base, "latency_seconds_bucket")
    (row,) = rows
    assert row["metric"] == {"__name__": "orders_total", "job": "shop", "env": "ci",
                             "instance": "i-9", "method": "card"}  # honor_labels: true
    assert float(row["value"][1]) == 7.0
    assert {r["metric"]["le"]: float(r["value"][1]) for r in buckets} == {
        "0.5": 1.0, "1": 2.0, "+Inf": 3.0}
