"""End to end: OTel SDK -> OTLP gRPC -> otelflow (prometheusremotewrite, from YAML) -> a real
Prometheus -> PromQL."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

from otelflow.testing.process import CollectorProcess, free_port
from otelflow.testing.prometheus import PrometheusServer


@pytest.fixture
def prometheus():
    """A real Prometheus with the remote-write receiver on a free loopback port."""
    with PrometheusServer(flags=("--web.enable-remote-write-receiver",
                                 "--enable-feature=native-histograms")) as prom:
        yield prom.url


def query(base: str, promql: str) -> list[dict]:
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


COLLECTOR = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  prometheusremotewrite:
    endpoint: {prometheus}/api/v1/write
    external_labels:
      cluster: ci
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics: {{receivers: [otlp], exporters: [prometheusremotewrite]}}
"""


def send_with_sdk(port: int) -> None:
    """A counter, up-down counter, gauge and histogram with attributes, exported by the real
    SDK over OTLP gRPC."""
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": "checkout", "service.namespace": "shop",
                                  "service.instance.id": "i-1",
                                  "deployment.environment": "test"}),
        metric_readers=[reader],
        views=[View(instrument_name="request.duration",
                    aggregation=ExplicitBucketHistogramAggregation([10, 20, 30, 40])),
               View(instrument_name="payload.size",
                    aggregation=ExponentialBucketHistogramAggregation())])
    meter = provider.get_meter("test")
    orders = meter.create_counter("orders", unit="{order}")
    orders.add(3, {"payment.method": "card"})
    orders.add(2, {"payment.method": "cash"})
    orders.add(1, {"payment.method": "card"})
    queue = meter.create_up_down_counter("queue.size", unit="{item}")
    queue.add(10, {"queue": "q1"})
    queue.add(-4, {"queue": "q1"})

    def temperature(options: CallbackOptions):
        yield Observation(21.5, {"zone": "a"})

    meter.create_observable_gauge("cpu.temperature", [temperature], unit="Cel")
    duration = meter.create_histogram("request.duration", unit="ms")
    for value in [5, 5, 15, 15, 15, 15, 25, 25, 25, 25]:
        duration.record(value, {"http.route": "/pay"})
    payload = meter.create_histogram("payload.size", unit="By")
    for i in range(1, 101):
        payload.record(i * 10.0, {"topic": "t1"})
    assert provider.force_flush(10_000)
    provider.shutdown()


def test_sdk_metrics_land_in_prometheus(prometheus):
    port = free_port()
    with CollectorProcess(COLLECTOR.format(port=port, prometheus=prometheus),
                          wait_port=port) as collector:
        send_with_sdk(port)
        deadline = time.monotonic() + 15
        while not query(prometheus, "request_duration_milliseconds_count"):
            assert time.monotonic() < deadline, collector.logs()
            time.sleep(0.1)

    common = {"job": "shop/checkout", "instance": "i-1", "cluster": "ci"}
    orders = {r["metric"]["payment_method"]: float(r["value"][1])
              for r in query(prometheus, "orders_total")}
    assert orders == {"card": 4.0, "cash": 2.0}
    (row,) = query(prometheus, 'orders_total{payment_method="cash"}')
    assert row["metric"] == {"__name__": "orders_total", "payment_method": "cash", **common}

    (row,) = query(prometheus, "queue_size")
    assert row["metric"] == {"__name__": "queue_size", "queue": "q1", **common}
    assert float(row["value"][1]) == 6.0

    (row,) = query(prometheus, "cpu_temperature_celsius")
    assert row["metric"]["zone"] == "a" and float(row["value"][1]) == 21.5

    rows = query(prometheus, 'request_duration_milliseconds_bucket{http_route="/pay"}')
    buckets = {r["metric"]["le"]: float(r["value"][1]) for r in rows}
    assert buckets == {"10": 2.0, "20": 6.0, "30": 10.0, "40": 10.0, "+Inf": 10.0}
    (row,) = query(prometheus, "request_duration_milliseconds_count")
    assert float(row["value"][1]) == 10.0
    (row,) = query(prometheus, "request_duration_milliseconds_sum")
    assert float(row["value"][1]) == 170.0
    # rank 5 of 10 falls in (10, 20] holding 4 of them after 2 below: 10 + 10 * 3/4
    (row,) = query(prometheus, "histogram_quantile(0.5, request_duration_milliseconds_bucket)")
    assert float(row["value"][1]) == pytest.approx(17.5)

    (row,) = query(prometheus, "target_info")
    labels = row["metric"]
    assert labels["telemetry_sdk_language"] == "python"
    assert {k: labels[k] for k in ("__name__", "deployment_environment", *common)} == {
        "__name__": "target_info", "deployment_environment": "test", **common}
    assert not {"service_name", "service_instance_id"} & set(labels)


def test_exponential_histogram_is_a_native_histogram(prometheus):
    """The SDK's exponential histogram (values 10, 20, ... 1000) arrives as a Prometheus
    native histogram: count, sum and quantiles within the bucket resolution."""
    port = free_port()
    with CollectorProcess(COLLECTOR.format(port=port, prometheus=prometheus),
                          wait_port=port) as collector:
        send_with_sdk(port)
        deadline = time.monotonic() + 15
        while not query(prometheus, "histogram_count(payload_size_bytes)"):
            assert time.monotonic() < deadline, collector.logs()
            time.sleep(0.1)
    (row,) = query(prometheus, "histogram_count(payload_size_bytes)")
    assert row["metric"] == {"job": "shop/checkout", "instance": "i-1", "cluster": "ci",
                             "topic": "t1"}
    assert float(row["value"][1]) == 100.0
    (row,) = query(prometheus, "histogram_sum(payload_size_bytes)")
    assert float(row["value"][1]) == 50500.0
    for q, exact in ((0.5, 500.0), (0.9, 900.0)):
        (row,) = query(prometheus, f"histogram_quantile({q}, payload_size_bytes)")
        assert float(row["value"][1]) == pytest.approx(exact, rel=0.05)
