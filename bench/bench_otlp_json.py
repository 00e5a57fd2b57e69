"""OTLP/JSON decode and encode throughput: otelflow.otlp_json vs google.protobuf.json_format.

    PYTHONPATH=src python bench/bench_otlp_json.py [--spans 1000] [--runs 5]

One request of `--spans` spans (5 attributes each, as bench_replay.py), also a metrics request
(gauge, sum, histogram, exponential histogram, summary, with exemplars) and a logs request.
Decoding is timed from the JSON text (json.loads included) to the protobuf request; the
baseline is what otlp_json did before: decode = hex ids -> base64 walk, then
json_format.ParseDict; encode = json_format.MessageToDict, then base64 ids -> hex.
Encoding is timed to the JSON text. Prints the median of `--runs` runs, items/s, speed-up.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections.abc import Callable

from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otelflow import otlp_json
from otelflow.pdata import Signal, count_items

ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def old_decode(signal: Signal, text: str):
    """The json_format-based decoder otlp_json used before (ids hex -> base64, ParseDict)."""
    data = json.loads(text)
    _hex_to_b64(data)
    message = signal.request_type()
    json_format.ParseDict(data, message, ignore_unknown_fields=True)
    return message


def _hex_to_b64(node) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_KEYS and isinstance(value, str):
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                _hex_to_b64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_to_b64(item)


def old_dumps(message) -> str:
    """The MessageToDict-based encoder otlp_json used before (then base64 ids -> hex)."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    _b64_to_hex(data)
    return json.dumps(data, separators=(",", ":"))


def _b64_to_hex(node) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _b64_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _b64_to_hex(item)


def attrs(i: int) -> list[KeyValue]:
    return [KeyValue(key="http.request.method", value=AnyValue(string_value="GET")),
            KeyValue(key="http.route", value=AnyValue(string_value=f"/api/items/{i % 20}")),
            KeyValue(key="http.response.status_code", value=AnyValue(int_value=200)),
            KeyValue(key="server.address", value=AnyValue(string_value="api.example.com")),
            KeyValue(key="net.peer.port", value=AnyValue(int_value=40000 + i))]


START = 1_700_000_000_000_000_000


def traces_request(n: int):
    request = Signal.TRACES.request_type()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "bench"
    spans = rs.scope_spans.add(scope={"name": "bench", "version": "1"}).spans
    for i in range(n):
        spans.add(trace_id=i.to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
                  parent_span_id=(i + 2).to_bytes(8, "big"), name=f"GET /api/items/{i % 20}",
                  kind=2, start_time_unix_nano=START + i, end_time_unix_nano=START + i + 250_000,
                  attributes=attrs(i), status={"code": 1})
    return request


def metrics_request(n: int):
    """n metrics of each type, 2 points each, with exemplars."""
    request = Signal.METRICS.request_type()
    rm = request.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "bench"
    metrics = rm.scope_metrics.add(scope={"name": "bench"}).metrics
    exemplar = {"time_unix_nano": START, "as_double": 1.5, "trace_id": b"\1" * 16,
                "span_id": b"\2" * 8, "filtered_attributes": attrs(0)[:1]}
    for i in range(n):
        point = {"attributes": attrs(i)[:3], "start_time_unix_nano": START,
                 "time_unix_nano": START + i}
        metrics.add(name=f"g{i}", gauge={"data_points": [
            {**point, "as_double": 0.5 * i}, {**point, "as_int": i, "exemplars": [exemplar]}]})
        metrics.add(name=f"s{i}", sum={"aggregation_temporality": 2, "is_monotonic": True,
                                       "data_points": [{**point, "as_int": i}] * 2})
        metrics.add(name=f"h{i}", histogram={"aggregation_temporality": 2, "data_points": [
            {**point, "count": 3, "sum": 2.5, "min": 0.1, "max": 2.0,
             "bucket_counts": [1, 1, 1], "explicit_bounds": [0.5, 1.0],
             "exemplars": [exemplar]}] * 2})
        metrics.add(name=f"e{i}", exponential_histogram={"aggregation_temporality": 1,
                    "data_points": [{**point, "count": 4, "scale": 2, "zero_count": 1,
                                     "positive": {"offset": -1, "bucket_counts": [1, 2]},
                                     "negative": {"bucket_counts": [0]}}] * 2})
        metrics.add(name=f"q{i}", summary={"data_points": [
            {**point, "count": 2, "sum": 3.0, "quantile_values": [
                {"quantile": 0.5, "value": 1.0}, {"quantile": 1.0, "value": 2.0}]}] * 2})
    return request


def logs_request(n: int):
    request = Signal.LOGS.request_type()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "bench"
    records = rl.scope_logs.add(scope={"name": "bench"}).log_records
    for i in range(n):
        records.add(time_unix_nano=START + i, observed_time_unix_nano=START + i,
                    severity_number=9, severity_text="INFO", body={"string_value": f"line {i}"},
                    attributes=attrs(i), trace_id=i.to_bytes(16, "big"),
                    span_id=(i + 1).to_bytes(8, "big"), flags=1)
    return request


def requests(spans: int) -> dict[Signal, object]:
    return {Signal.TRACES: traces_request(spans), Signal.METRICS: metrics_request(spans // 10),
            Signal.LOGS: logs_request(spans)}


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'signal':8} {'what':7} {'items':>6} {'json_format/s':>14} {'otlp_json/s':>12} "
          f"{'speed-up':>8}")
    for signal, message in requests(args.spans).items():
        items = count_items(signal, message)
        text = otlp_json.dumps(message)
        assert otlp_json.loads(signal, text) == message == old_decode(signal, text)
        assert json.loads(old_dumps(message)) == json.loads(text)
        for what, old, new in (
                ("decode", lambda s=signal, t=text: old_decode(s, t),
                 lambda s=signal, t=text: otlp_json.loads(s, t)),
                ("encode", lambda m=message: old_dumps(m), lambda m=message: otlp_json.dumps(m))):
            before, after = median_seconds(old, args.runs), median_seconds(new, args.runs)
            print(f"{signal:8} {what:7} {items:>6} {items / before:>14,.0f} "
                  f"{items / after:>12,.0f} {before / after:>7.1f}x")


if __name__ == "__main__":
    main()
