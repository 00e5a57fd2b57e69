"""newest_timestamp / shift_timestamps over every signal's timestamp fields."""

from __future__ import annotations

from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar, HistogramDataPoint, Metric

from otelflow.pdata import Signal
from otelflow.testing import build
from otelflow.timestamps import newest_timestamp, shift_timestamps


def test_metrics_points_and_exemplars_shift_zero_stays_zero():
    histogram = Metric(name="h")
    histogram.histogram.data_points.append(HistogramDataPoint(
        start_time_unix_nano=100, time_unix_nano=200, count=1,
        exemplars=[Exemplar(time_unix_nano=150, as_double=1.0)]))
    request = build.metrics(build.gauge("g", 1.0, time_ns=300), histogram)
    assert newest_timestamp(Signal.METRICS, request) == 300
    shift_timestamps(Signal.METRICS, request, 1000)
    gauge_point = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0]
    point = request.resource_metrics[0].scope_metrics[0].metrics[1].histogram.data_points[0]
    assert (gauge_point.start_time_unix_nano, gauge_point.time_unix_nano) == (0, 1300)
    assert (point.start_time_unix_nano, point.time_unix_nano) == (1100, 1200)
    assert point.exemplars[0].time_unix_nano == 1150


def test_traces_and_logs():
    traces = build.traces(build.span("a", start=1_000, duration_ms=0.001),
                          build.span("b", start=5_000, duration_ms=0.002))
    assert newest_timestamp(Signal.TRACES, traces) == 7_000
    shift_timestamps(Signal.TRACES, traces, -500)
    spans = traces.resource_spans[0].scope_spans[0].spans
    assert [(s.start_time_unix_nano, s.end_time_unix_nano) for s in spans] == [(500, 1500), (4500, 6500)]
    logs = build.logs(build.log("x", time_ns=10))
    logs.resource_logs[0].scope_logs[0].log_records[0].observed_time_unix_nano = 0
    assert newest_timestamp(Signal.LOGS, logs) == 10
    shift_timestamps(Signal.LOGS, logs, 5)
    record = logs.resource_logs[0].scope_logs[0].log_records[0]
    assert (record.time_unix_nano, record.observed_time_unix_nano) == (15, 0)
    assert newest_timestamp(Signal.LOGS, Signal.LOGS.request_type()) == 0
