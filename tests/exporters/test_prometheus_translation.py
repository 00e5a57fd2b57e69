"""Translator rules, table-driven from the Go `pkg/translator/prometheus` documented behaviour."""

from __future__ import annotations

import math
import random
import struct

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otelflow.exporters.prometheus_translation import (
    COUNTER,
    GAUGE,
    HISTOGRAM,
    UPDOWN,
    RemoteWriteEncoder,
    SeriesBuilder,
    TranslationSettings,
    build_name,
    format_float,
    normalize_label,
    number_data,
)
from otelflow.exporters.prompb import remote_pb2
from otelflow.wire import tag_length

NAME_CASES = [
    # (otel name, unit, kind, expected prometheus name)
    ("system.filesystem.usage", "By", GAUGE, "system_filesystem_usage_bytes"),
    ("system.io", "By", COUNTER, "system_io_bytes_total"),
    ("network_transmitted_bytes_total", "By", COUNTER, "network_transmitted_bytes_total"),
    ("\t system.filesystem.usage       ", "  By\t", GAUGE, "system_filesystem_usage_bytes"),
    ("system.network.dropped", "{packets}", GAUGE, "system_network_dropped"),
    ("system.network.dropped", "{packets}", COUNTER, "system_network_dropped_total"),
    ("system.network.dropped", "packets", GAUGE, "system_network_dropped_packets"),
    ("system.network.packets.dropped", "packets", GAUGE, "system_network_packets_dropped"),
    ("system.network.packets", "packets", GAUGE, "system_network_packets"),
    ("system.network.dropped", "packets", COUNTER, "system_network_dropped_packets_total"),
    ("hw.gpu.memory.utilization", "1", GAUGE, "hw_gpu_memory_utilization_ratio"),
    ("hw.fan.speed_ratio", "1", GAUGE, "hw_fan_speed_ratio"),
    ("objects", "1", COUNTER, "objects_total"),
    ("queue.depth", "1", UPDOWN, "queue_depth"),  # _ratio is for gauges only
    ("hw.cpu.speed_limit", "Hz", GAUGE, "hw_cpu_speed_limit_hertz"),
    ("broken.metric.speed", "km/h", GAUGE, "broken_metric_speed_km_per_hour"),
    ("astro.light.speed_limit", "m/s", GAUGE, "astro_light_speed_limit_meters_per_second"),
    ("broken.metric.success_ratio", "%", GAUGE, "broken_metric_success_ratio_percent"),
    ("broken.metric.success_percent", "%", GAUGE, "broken_metric_success_percent"),
    ("test.metric.no_unit", "", GAUGE, "test_metric_no_unit"),
    ("test.metric.spaces", "   \t  ", GAUGE, "test_metric_spaces"),
    ("unsupported.metric.temperature", "°F", GAUGE, "unsupported_metric_temperature_F"),
    ("unsupported.metric.weird", "+=.:,!* & #", GAUGE, "unsupported_metric_weird"),
    ("unsupported.metric.redundant", "__test $/°C", GAUGE,
     "unsupported_metric_redundant_test_per_C"),
    ("active_directory.ds.replication.object.rate", "{objects}/s", GAUGE,
     "active_directory_ds_replication_object_rate_per_second"),
    ("active_directory.ds.ldap.bind.last_successful.time", "ms", GAUGE,
     "active_directory_ds_ldap_bind_last_successful_time_milliseconds"),
    ("apache.current_connections", "connections", GAUGE, "apache_current_connections"),
    ("apache.workers", "connections", GAUGE, "apache_workers_connections"),
    ("system.disk.operation_time", "s", COUNTER, "system_disk_operation_time_seconds_total"),
    ("system.cpu.load_average.15m", "1", GAUGE, "system_cpu_load_average_15m_ratio"),
    ("mongodbatlas.process.journaling.data_files", "MiBy", GAUGE,
     "mongodbatlas_process_journaling_data_files_mebibytes"),
    ("mongodbatlas.process.network.io", "By/s", GAUGE,
     "mongodbatlas_process_network_io_bytes_per_second"),
    ("mongodbatlas.process.oplog.rate", "GiBy/h", GAUGE,
     "mongodbatlas_process_oplog_rate_gibibytes_per_hour"),
    ("mongodbatlas.process.db.query_targeting.scanned_per_returned", "{scanned}/{returned}",
     GAUGE, "mongodbatlas_process_db_query_targeting_scanned_per_returned"),
    ("nsxt.node.memory.usage", "KBy", GAUGE, "nsxt_node_memory_usage_kilobytes"),
    ("redis.latest_fork", "us", GAUGE, "redis_latest_fork_microseconds"),
    ("crypto.dogecoin.value", "$", GAUGE, "crypto_dogecoin_value_dollars"),
    ("3.14 digits", "", GAUGE, "_3_14_digits"),
    ("envoy__rule_engine_zlib_buf_error", "", GAUGE, "envoy_rule_engine_zlib_buf_error"),
    (":foo::bar", "", GAUGE, "foo_bar"),
    (":foo::bar", "", COUNTER, "foo_bar_total"),
    ("http.server.duration", "ms", HISTOGRAM, "http_server_duration_milliseconds"),
    ("(lambda).function.executions(#)", "", GAUGE, "lambda_function_executions"),
]


@pytest.mark.parametrize(("name", "unit", "kind", "expected"), NAME_CASES)
def test_build_name(name, unit, kind, expected):
    assert build_name(name, unit, kind) == expected


@pytest.mark.parametrize(("name", "unit", "kind", "namespace", "suffixes", "expected"), [
    ("network.io", "By", COUNTER, "system", True, "system_network_io_bytes_total"),
    ("test", "", GAUGE, "space", True, "space_test"),
    ("#test", "", GAUGE, "space", True, "space_test"),
    ("system.io", "By", COUNTER, "", False, "system_io"),
    ("network (I/O)", "By", COUNTER, "system", False, "system_network_I_O"),
    ("3.14 digits", "By", GAUGE, "", False, "_3_14_digits"),
    ("envoy__rule_engine_zlib_buf_error", "", GAUGE, "", False,
     "envoy__rule_engine_zlib_buf_error"),
    (":foo::bar", "", COUNTER, "", False, ":foo::bar"),
])
def test_build_name_namespace_and_without_suffixes(name, unit, kind, namespace, suffixes,
                                                    expected):
    assert build_name(name, unit, kind, namespace, suffixes) == expected


@pytest.mark.parametrize(("label", "expected"), [
    ("name", "name"),
    ("host.name", "host_name"),
    ("host_name", "host_name"),
    ("name (of the host)", "name__of_the_host_"),
    ("2 cents", "key_2_cents"),
    ("__name", "__name"),
    ("_name", "key_name"),
    ("", ""),
    ("http.response.status_code", "http_response_status_code"),
    ("k8s.pod.uid", "k8s_pod_uid"),
    ("label:with:colons", "label_with_colons"),
    ("数据", "数据"),
])
def test_normalize_label(label, expected):
    assert normalize_label(label) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (0.005, "0.005"), (10.0, "10"), (2.5, "2.5"), (1e6, "1000000"), (1e-7, "0.0000001"),
    (math.inf, "+Inf"), (0.0, "0")])
def test_format_float_like_go(value, expected):
    assert format_float(value) == expected


# -- series ---------------------------------------------------------------------------------

def kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


TS = 1_700_000_000_123_456_789
TS_MS = 1_700_000_000_123


def request(resource: dict | None = None) -> tuple[ExportMetricsServiceRequest, object]:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    attrs = resource if resource is not None else {
        "service.name": "api", "service.namespace": "shop", "service.instance.id": "pod-1",
        "host.name": "node-a"}
    rm.resource.attributes.extend([kv(k, v) for k, v in attrs.items()])
    return req, rm.scope_metrics.add()


def translate(req, **settings) -> dict[tuple, list]:
    """{sorted label tuple: [(value, ts), ...]} over all requests produced."""
    enc = RemoteWriteEncoder()
    SeriesBuilder(TranslationSettings(**settings)).build(req, enc)
    out = {}
    for body in enc.requests(3_000_000):
        for ts in remote_pb2.WriteRequest.FromString(body).timeseries:
            names = [label.name for label in ts.labels]
            assert names == sorted(names)
            out[tuple((label.name, label.value) for label in ts.labels)] = [
                (s.value, s.timestamp) for s in ts.samples]
    return out


def by_name(series: dict, name: str) -> dict[tuple, list]:
    return {k: v for k, v in series.items() if ("__name__", name) in k}


def test_counter_job_instance_target_info_and_attribute_types():
    req, scope = request()
    metric = scope.metrics.add(name="http.requests", unit="1")
    metric.sum.is_monotonic, metric.sum.aggregation_temporality = True, 2
    dp = metric.sum.data_points.add(time_unix_nano=TS, as_int=7)
    dp.attributes.extend([kv("http.method", "GET"), kv("ok", True), kv("code", 200),
                          kv("ratio", 0.5)])
    series = translate(req)
    assert series[(("__name__", "http_requests_total"), ("code", "200"),
                   ("http_method", "GET"), ("instance", "pod-1"), ("job", "shop/api"),
                   ("ok", "true"), ("ratio", "0.5"))] == [(7.0, TS_MS)]
    assert series[(("__name__", "target_info"), ("host_name", "node-a"),
                   ("instance", "pod-1"), ("job", "shop/api"))] == [(1.0, TS_MS)]


def test_resource_to_telemetry_external_labels_and_collisions():
    req, scope = request()
    metric = scope.metrics.add(name="temp", unit="Cel")
    dp = metric.gauge.data_points.add(time_unix_nano=TS, as_double=21.5)
    dp.attributes.extend([kv("a.b", "1"), kv("a_b", "2"), kv("cluster", "mine")])
    series = translate(req, resource_to_telemetry=True, target_info=False,
                       external_labels={"cluster": "ext", "region": "eu"})
    (labels, samples), = series.items()
    assert dict(labels) == {"__name__": "temp_celsius", "a_b": "1;2", "cluster": "mine",
                            "host_name": "node-a", "instance": "pod-1", "job": "shop/api",
                            "region": "eu", "service_instance_id": "pod-1",
                            "service_name": "api", "service_namespace": "shop"}
    assert samples == [(21.5, TS_MS)]


def test_histogram_buckets_sum_count_and_exemplar():
    req, scope = request({"service.name": "api"})
    metric = scope.metrics.add(name="http.server.duration", unit="s")
    metric.histogram.aggregation_temporality = 2
    dp = metric.histogram.data_points.add(time_unix_nano=TS, count=6, sum=3.5,
                                          explicit_bounds=[0.1, 0.5, 1.0],
                                          bucket_counts=[1, 2, 3, 0])
    dp.attributes.append(kv("route", "/a"))
    ex = dp.exemplars.add(as_double=0.3, time_unix_nano=TS, trace_id=bytes(range(16)),
                          span_id=bytes(range(8)))
    ex.filtered_attributes.append(kv("user", "u1"))
    enc = RemoteWriteEncoder()
    SeriesBuilder(TranslationSettings()).build(req, enc)
    wr = remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0])
    got = {}
    for ts in wr.timeseries:
        labels = {label.name: label.value for label in ts.labels}
        got[(labels["__name__"], labels.get("le"))] = (ts.samples[0].value, list(ts.exemplars))
        assert labels["route"] == "/a" and labels["job"] == "api"
    base = "http_server_duration_seconds"
    assert {k: v[0] for k, v in got.items()} == {
        (base + "_sum", None): 3.5, (base + "_count", None): 6.0,
        (base + "_bucket", "0.1"): 1.0, (base + "_bucket", "0.5"): 3.0,
        (base + "_bucket", "1"): 6.0, (base + "_bucket", "+Inf"): 6.0}
    exemplar, = got[(base + "_bucket", "0.5")][1]
    assert {label.name: label.value for label in exemplar.labels} == {
        "trace_id": bytes(range(16)).hex(), "span_id": bytes(range(8)).hex(), "user": "u1"}
    assert exemplar.value == 0.3 and exemplar.timestamp == TS_MS


def test_summary_quantiles():
    req, scope = request({})
    metric = scope.metrics.add(name="rpc.latency", unit="ms")
    dp = metric.summary.data_points.add(time_unix_nano=TS, count=4, sum=40.0)
    dp.quantile_values.add(quantile=0.5, value=9.0)
    dp.quantile_values.add(quantile=0.99, value=20.0)
    series = translate(req)
    assert series == {
        (("__name__", "rpc_latency_milliseconds_sum"),): [(40.0, TS_MS)],
        (("__name__", "rpc_latency_milliseconds_count"),): [(4.0, TS_MS)],
        (("__name__", "rpc_latency_milliseconds"), ("quantile", "0.5")): [(9.0, TS_MS)],
        (("__name__", "rpc_latency_milliseconds"), ("quantile", "0.99")): [(20.0, TS_MS)]}


def test_no_recorded_value_is_staleness_nan():
    req, scope = request({})
    metric = scope.metrics.add(name="up.down")
    metric.sum.aggregation_temporality = 2
    metric.sum.data_points.add(time_unix_nano=TS, as_int=3, flags=1)
    (_, samples), = translate(req).items()
    bits = struct.unpack("<Q", struct.pack("<d", samples[0][0]))[0]
    assert bits == 0x7FF0000000000002


def test_samples_of_one_series_are_in_timestamp_order():
    req, scope = request({})
    metric = scope.metrics.add(name="g")
    for i, t in enumerate([3, 1, 2]):
        metric.gauge.data_points.add(time_unix_nano=t * 1_000_000_000, as_double=float(i))
    (_, samples), = translate(req).items()
    assert samples == [(1.0, 1000), (2.0, 2000), (0.0, 3000)]


def test_delta_refused_per_point():
    req, scope = request({})
    metric = scope.metrics.add(name="d")
    metric.histogram.aggregation_temporality = 1
    metric.histogram.data_points.add(time_unix_nano=TS, count=1)
    metric.histogram.data_points.add(time_unix_nano=TS, count=2)
    result = SeriesBuilder(TranslationSettings()).build(req, RemoteWriteEncoder())
    assert result.dropped == 2 and "delta" in result.errors[0]


def test_exponential_histogram_as_native_histogram():
    req, scope = request({})
    metric = scope.metrics.add(name="latency", unit="s")
    metric.exponential_histogram.aggregation_temporality = 2
    dp = metric.exponential_histogram.data_points.add(
        time_unix_nano=TS, count=7, sum=12.0, scale=2, zero_count=1)
    dp.positive.offset = -1
    dp.positive.bucket_counts.extend([2, 0, 4])
    enc = RemoteWriteEncoder()
    SeriesBuilder(TranslationSettings()).build(req, enc)
    ts, = remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0]).timeseries
    assert [(label.name, label.value) for label in ts.labels] == [("__name__", "latency_seconds")]
    h, = ts.histograms
    assert (h.count_int, h.sum, h.schema, h.zero_count_int, h.timestamp) == (7, 12.0, 2, 1, TS_MS)
    assert [(s.offset, s.length) for s in h.positive_spans] == [(0, 3)]
    assert list(h.positive_deltas) == [2, -2, 4]


def test_metadata_sent_when_asked():
    req, scope = request({})
    metric = scope.metrics.add(name="jobs", unit="s", description="Jobs done")
    metric.sum.is_monotonic, metric.sum.aggregation_temporality = True, 2
    metric.sum.data_points.add(time_unix_nano=TS, as_int=1)
    enc = RemoteWriteEncoder()
    SeriesBuilder(TranslationSettings(send_metadata=True)).build(req, enc)
    md, = remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0]).metadata
    assert (md.type, md.metric_family_name, md.help, md.unit) == (
        md.COUNTER, "jobs_seconds_total", "Jobs done", "seconds")


def test_counter_exemplars_with_int_and_double_values():
    req, scope = request({})
    metric = scope.metrics.add(name="hits")
    metric.sum.is_monotonic, metric.sum.aggregation_temporality = True, 2
    for i, point in enumerate([{"as_int": 4}, {"as_double": 2.5}]):
        dp = metric.sum.data_points.add(time_unix_nano=TS, **point)
        dp.attributes.append(kv("n", str(i)))
        dp.exemplars.add(as_double=1.0 + i, time_unix_nano=TS, trace_id=b"\x01" * 16)
    enc = RemoteWriteEncoder()
    SeriesBuilder(TranslationSettings()).build(req, enc)
    wr = remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0])
    got = {ts.labels[1].value: (ts.samples[0].value, [e.value for e in ts.exemplars],
                                ts.exemplars[0].labels[0].value) for ts in wr.timeseries}
    assert got == {"0": (4.0, [1.0], "01" * 16), "1": (2.5, [2.0], "01" * 16)}


def test_label_cache_keeps_resources_and_values_apart():
    """The same point attributes under two resources are two series, and a cached series
    still takes each request's own value and timestamp."""
    builder = SeriesBuilder(TranslationSettings(target_info=False))
    for step in (1, 2):
        req = ExportMetricsServiceRequest()
        for service in ("a", "b"):
            rm = req.resource_metrics.add()
            rm.resource.attributes.append(kv("service.name", service))
            metric = rm.scope_metrics.add().metrics.add(name="g")
            dp = metric.gauge.data_points.add(time_unix_nano=step * 10**9, as_double=step * 1.5)
            dp.attributes.append(kv("k", "v"))
        enc = RemoteWriteEncoder()
        builder.build(req, enc)
        series = {}
        for ts in remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0]).timeseries:
            labels = {label.name: label.value for label in ts.labels}
            series[labels["job"]] = [(s.value, s.timestamp) for s in ts.samples]
        assert series == {"a": [(step * 1.5, step * 1000)], "b": [(step * 1.5, step * 1000)]}


def test_stale_flag_on_a_known_series():
    builder = SeriesBuilder(TranslationSettings(target_info=False))
    values = []
    for flags in (0, 1, 0):
        req, scope = request({})
        dp = scope.metrics.add(name="g").gauge.data_points.add(time_unix_nano=TS, as_double=3.0,
                                                                flags=flags)
        dp.attributes.append(kv("k", "v"))
        enc = RemoteWriteEncoder()
        builder.build(req, enc)
        ts, = remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0]).timeseries
        values.append(ts.samples[0].value)
    assert values[0] == 3.0 and math.isnan(values[1]) and values[2] == 3.0


def test_histogram_without_sum_and_stale():
    req, scope = request({})
    metric = scope.metrics.add(name="h")
    metric.histogram.aggregation_temporality = 2
    metric.histogram.data_points.add(time_unix_nano=TS, count=2, explicit_bounds=[1.0],
                                     bucket_counts=[1, 1])
    metric.histogram.data_points.add(time_unix_nano=TS + 10**9, count=2, sum=3.0,
                                     explicit_bounds=[1.0], bucket_counts=[1, 1], flags=1)
    series = translate(req)
    assert series[(("__name__", "h_count"),)][0] == (2.0, TS_MS)
    assert len(series[(("__name__", "h_sum"),)]) == 1  # only the stale point carried a sum
    assert all(math.isnan(v) for v, _ in series[(("__name__", "h_sum"),)])
    assert series[(("__name__", "h_bucket"), ("le", "1"))][0] == (1.0, TS_MS)


def test_exponential_histogram_scale_above_8_is_merged_down():
    req, scope = request({})
    metric = scope.metrics.add(name="x")
    metric.exponential_histogram.aggregation_temporality = 2
    dp = metric.exponential_histogram.data_points.add(time_unix_nano=TS, count=15, scale=10)
    dp.positive.offset = 3
    dp.positive.bucket_counts.extend([1, 2, 3, 4, 5])  # indices 3..7 -> 0, 1, 1, 1, 1 at 8
    enc = RemoteWriteEncoder()
    SeriesBuilder(TranslationSettings()).build(req, enc)
    ts, = remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0]).timeseries
    h, = ts.histograms
    assert h.schema == 8
    assert [(s.offset, s.length) for s in h.positive_spans] == [(1, 2)]
    assert list(h.positive_deltas) == [1, 13]


def test_exponential_histogram_scale_below_minus_4_is_refused_per_point():
    req, scope = request({})
    metric = scope.metrics.add(name="x")
    metric.exponential_histogram.aggregation_temporality = 2
    metric.exponential_histogram.data_points.add(time_unix_nano=TS, count=1, scale=-5)
    metric.exponential_histogram.data_points.add(time_unix_nano=TS, count=1, scale=0)
    enc = RemoteWriteEncoder()
    result = SeriesBuilder(TranslationSettings()).build(req, enc)
    assert (result.points, result.dropped) == (1, 1)
    assert "scale -5 is below -4" in result.errors[0]
    assert enc.series_count == 1


@pytest.mark.parametrize("with_raw", [False, True], ids=["parsed", "raw"])
@pytest.mark.parametrize("seed", range(6))
def test_gauge_and_sum_samples_match_a_per_point_oracle(seed, with_raw):
    """Random gauges/sums where series repeat within a request (several timestamps, a metric
    split in two), some with exemplars, stale flags, int values and timestamp 0: every
    series is written once, with all its samples in timestamp order, whichever path each
    sample took."""
    rnd = random.Random(seed)
    builder = SeriesBuilder(TranslationSettings(target_info=False))
    for _ in range(3):  # later requests hit the series cache
        req, scope = request({"service.name": "svc"})
        expected: dict[tuple, list] = {}
        for m in range(rnd.randint(1, 4)):
            for _part in range(rnd.randint(1, 2)):  # the same metric twice in one scope
                metric = scope.metrics.add(name=f"m{m}")
                data = metric.gauge if m % 2 else metric.sum
                if not m % 2:
                    data.aggregation_temporality = 2
                for _ in range(rnd.randint(1, 6)):
                    t_ms = rnd.choice([0, 5, TS_MS, TS_MS + 1000, TS_MS + 2000])
                    dp = data.data_points.add(time_unix_nano=t_ms * 1_000_000)
                    value = float(rnd.randint(0, 9))
                    if rnd.random() < 0.5:
                        dp.as_int = int(value)
                    else:
                        dp.as_double = value
                    series = rnd.randint(0, 2)
                    dp.attributes.append(kv("s", str(series)))
                    if rnd.random() < 0.2:
                        dp.flags = 1
                        value = math.nan
                    if rnd.random() < 0.2:
                        dp.exemplars.add(as_double=1.0, time_unix_nano=TS)
                    key = (("__name__", f"m{m}"), ("job", "svc"), ("s", str(series)))
                    expected.setdefault(key, []).append((t_ms, value))
        enc = RemoteWriteEncoder()
        builder.build(req, enc, req.SerializeToString() if with_raw else None)
        got: dict[tuple, list] = {}
        for body in enc.requests(3_000_000):
            for ts in remote_pb2.WriteRequest.FromString(body).timeseries:
                key = tuple((label.name, label.value) for label in ts.labels)
                assert key not in got, f"series {key} written twice"
                got[key] = [(s.timestamp, s.value) for s in ts.samples]
        assert got.keys() == expected.keys()
        for key, samples in got.items():
            assert [t for t, _ in samples] == sorted(t for t, _ in samples)
            want = sorted(expected[key], key=lambda sample: sample[0])
            assert [(t, "nan" if math.isnan(v) else v) for t, v in sorted(samples)] == \
                [(t, "nan" if math.isnan(v) else v) for t, v in sorted(want)], key


def field(number: int, payload: bytes) -> bytes:
    return tag_length(number << 3 | 2, len(payload)) + payload


def fixed64(number: int, value: int) -> bytes:
    return bytes((number << 3 | 1,)) + struct.pack("<Q", value)


def test_points_in_any_field_order_translate_like_sdk_ordered_ones():
    """Wire bytes as another encoder may write them (attributes first, no start time,
    an unknown field, exemplars after attributes) give the same samples as the parsed
    message, and the same series twice gives one series with two samples."""
    attr = field(7, kv("route", "/a").SerializeToString())
    exemplar = field(5, fixed64(2, TS) + b"\x19" + struct.pack("<d", 9.0))
    points = [
        attr + fixed64(3, TS) + b"\x21" + struct.pack("<d", 1.5),           # attributes first
        fixed64(3, TS + 10**9) + b"\x31" + struct.pack("<q", 7) + attr,     # no start time
        fixed64(2, 1) + fixed64(3, TS + 2 * 10**9) + b"\x21" + struct.pack("<d", 2.5)
        + attr + exemplar + b"\xa8\x06\x01",                           # exemplar + field 101
    ]
    gauge = b"".join(field(1, p) for p in points)
    metric = field(1, b"temp") + field(5, gauge)
    raw = field(1, field(1, field(1, kv("service.name", "svc").SerializeToString()))
                + field(2, field(2, metric)))
    req = ExportMetricsServiceRequest.FromString(raw)
    outputs = []
    for source in (raw, None):
        enc = RemoteWriteEncoder()
        SeriesBuilder(TranslationSettings()).build(req, enc, source)
        outputs.append(remote_pb2.WriteRequest.FromString(enc.requests(10**6)[0]))
    assert outputs[0] == outputs[1]
    ts, = [t for t in outputs[0].timeseries if t.labels[0].value == "temp"]
    assert [(s.value, s.timestamp) for s in ts.samples] == [
        (1.5, TS // 10**6), (7.0, TS // 10**6 + 1000), (2.5, TS // 10**6 + 2000)]
    assert [e.value for e in ts.exemplars] == [9.0]


def test_number_data_finds_each_gauge_and_sum_and_skips_the_rest():
    req, scope = request({})
    scope.metrics.add(name="g").gauge.data_points.add(as_double=1.0)
    scope.metrics.add(name="h").histogram.data_points.add(count=1)
    summed = scope.metrics.add(name="s", unit="1")
    summed.sum.data_points.add(as_int=2)
    summed.sum.aggregation_temporality = 2
    raw = req.SerializeToString()
    assert number_data(raw) == [req.resource_metrics[0].scope_metrics[0].metrics[0]
                                .gauge.SerializeToString(), None,
                                summed.sum.SerializeToString()]
    twice = field(1, field(2, field(2, field(1, b"x") + field(5, b"") + field(5, b""))))
    assert number_data(twice) == [None]  # a parser merges the two: not read from the wire
