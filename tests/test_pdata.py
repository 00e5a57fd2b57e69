from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otelflow.pdata import Batch, Signal, count_items, split_request
from tests.builders import traces


def test_unchanged_bytes_reused_until_mutated():
    batch = traces("a", 3)
    raw = batch.unchanged_bytes
    assert raw is not None and batch.to_bytes() is raw
    assert batch.item_count() == 3
    batch.mutable().resource_spans[0].scope_spans[0].spans.pop()
    assert batch.unchanged_bytes is None
    assert batch.item_count() == 2
    assert len(batch.to_bytes()) < len(raw)


def test_lazy_batch_parses_on_read():
    raw = traces("a", 2).to_bytes()
    batch = Batch(Signal.TRACES, raw=raw)
    assert batch.item_count() == 2
    copy = batch.copy()
    copy.mutable().resource_spans.pop()
    assert batch.item_count() == 2 and copy.item_count() == 0


def test_metric_points_counted_across_kinds():
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    gauge = sm.metrics.add()
    gauge.gauge.data_points.add().as_double = 1
    gauge.gauge.data_points.add().as_double = 2
    hist = sm.metrics.add()
    hist.histogram.data_points.add().count = 3
    sm.metrics.add()  # a metric without data
    assert count_items(Signal.METRICS, req) == 3
    parts = split_request(Signal.METRICS, req, 2)
    assert [count_items(Signal.METRICS, p) for p in parts] == [2, 1]


def test_split_preserves_order_and_groups():
    batch = traces("a", 7)
    parts = split_request(Signal.TRACES, batch.message, 3)
    assert [count_items(Signal.TRACES, p) for p in parts] == [3, 3, 1]
    names = [s.name for p in parts for s in p.resource_spans[0].scope_spans[0].spans]
    assert names == [f"a-{i}" for i in range(7)]


def test_unparsed_spans_and_log_records_are_counted_without_parsing():
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    spans = traces("a", 7).message
    spans.resource_spans.extend(traces("b", 5).message.resource_spans)
    extra = spans.resource_spans[1].scope_spans.add()  # a second scope, spans of every size
    for size in (1, 300, 20_000):  # one-, two- and three-byte lengths
        extra.spans.add(name="x" * size)
    logs = ExportLogsServiceRequest()
    for n in (3, 0, 4):
        scope = logs.resource_logs.add().scope_logs.add()
        for _ in range(n):
            scope.log_records.add(severity_number=9)
    for signal, message in ((Signal.TRACES, spans), (Signal.LOGS, logs)):
        batch = Batch(signal, raw=message.SerializeToString())
        assert batch.item_count() == count_items(signal, message) == (15 if signal is
                                                                       Signal.TRACES else 7)
        assert batch._message is None  # counting did not parse
