"""prometheusremotewrite throughput: OTLP request bytes in -> snappy WriteRequest bytes out.

One core (the process pins itself), no network: per request it parses the OTLP bytes, then
runs the exporter's `encode` (translate + remote-write protobuf + snappy), exactly what
`export` does before the POST. The baseline measured in the same run is the upb floor:
parse + re-serialize of the same OTLP requests.

    python bench/bench_prw.py                      # all workloads, median of 5 runs
    python bench/bench_prw.py --repeat 7 --write bench/results/prw.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import structlog  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # noqa: E402
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

from otelflow.component import ComponentID, CreateSettings, Kind  # noqa: E402
from otelflow.exporters.prometheus_remote_write import (  # noqa: E402
    Config,
    PrometheusRemoteWriteExporter,
)
from otelflow.pdata import Batch, Signal  # noqa: E402
from otelflow.telemetry.metrics import SelfMetrics  # noqa: E402

SEC = 1_000_000_000


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def number_request(points: int, step: int, series_offset: int = 0) -> bytes:
    """`points` counter/gauge points over 10 metrics, 3 attributes each (SDK-like)."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "bench"), kv("service.instance.id", "i-1"),
                                   kv("host.name", "node-1")])
    scope = rm.scope_metrics.add()
    per_metric = points // 10
    ts = 1_700_000_000 * SEC + step * 10 * SEC
    for m in range(10):
        metric = scope.metrics.add(name=f"app.requests.{m}", unit="1")
        data = metric.sum if m % 2 == 0 else metric.gauge
        if m % 2 == 0:
            data.is_monotonic, data.aggregation_temporality = True, 2
        for i in range(per_metric):
            dp = data.data_points.add(start_time_unix_nano=ts - 60 * SEC, time_unix_nano=ts)
            if m % 2 == 0:
                dp.as_int = step * 7 + i
            else:
                dp.as_double = step * 0.5 + i
            n = series_offset + i
            dp.attributes.extend([kv("http.method", ("GET", "POST")[n % 2]),
                                  kv("http.route", f"/api/v{n % 7}/items"),
                                  kv("worker", f"w{n}")])
    return req.SerializeToString()


def histogram_request(points: int, step: int) -> bytes:
    """`points` histogram points with 10 explicit buckets and 2 attributes."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "bench"), kv("service.instance.id", "i-1")])
    metric = rm.scope_metrics.add().metrics.add(name="http.server.duration", unit="ms")
    metric.histogram.aggregation_temporality = 2
    ts = 1_700_000_000 * SEC + step * 10 * SEC
    bounds = [5, 10, 25, 50, 75, 100, 250, 500, 750, 1000]
    for i in range(points):
        counts = [(step + i + b) % 5 for b in range(11)]
        dp = metric.histogram.data_points.add(time_unix_nano=ts, count=sum(counts),
                                              sum=123.5 + step, explicit_bounds=bounds,
                                              bucket_counts=counts)
        dp.attributes.extend([kv("http.route", f"/r{i}"), kv("http.method", "GET")])
    return req.SerializeToString()


WORKLOADS = {
    # name: (request factory(step) -> bytes, description)
    "counters+gauges, steady series": (lambda s: number_request(1000, s),
                                       "1000 pts/request, 3 attrs, same series every request"),
    "counters+gauges, new series": (lambda s: number_request(1000, s, series_offset=s * 1000),
                                    "every request brings 1000 never-seen series (cold caches)"),
    "histograms (10 buckets)": (lambda s: histogram_request(100, s),
                                "100 histogram pts/request -> 13 series each"),
}


def make_exporter() -> PrometheusRemoteWriteExporter:
    config = Config.model_validate({"endpoint": "http://127.0.0.1:9/api/v1/write"})
    settings = CreateSettings(ComponentID.parse("prometheusremotewrite"), Kind.EXPORTER,
                              structlog.get_logger("bench"), SelfMetrics())
    return PrometheusRemoteWriteExporter(settings, config)


def run_once(requests: list[bytes]) -> tuple[float, float, int, int]:
    """(points/s through encode, floor points/s, bytes in, bytes out)."""
    exporter = make_exporter()
    points = sum(Batch.from_bytes(Signal.METRICS, r).item_count() for r in requests)
    t0 = time.process_time()
    out = 0
    for raw in requests:
        out += sum(len(b) for b in exporter.encode(Batch(Signal.METRICS, raw=raw)))
    elapsed = time.process_time() - t0
    t0 = time.process_time()
    for raw in requests:
        ExportMetricsServiceRequest.FromString(raw).SerializeToString()
    floor = time.process_time() - t0
    return points / elapsed, points / floor, sum(map(len, requests)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per workload (median)")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to (default: last)")
    parser.add_argument("--write", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    rows = []
    for name, (factory, description) in WORKLOADS.items():
        requests = [factory(step) for step in range(args.requests)]
        runs = [run_once(requests) for _ in range(args.repeat)]
        rate = statistics.median(r[0] for r in runs)
        floor = statistics.median(r[1] for r in runs)
        _, _, bytes_in, bytes_out = runs[0]
        rows.append((name, description, rate, floor, bytes_in, bytes_out))
        print(f"{name:34s} {rate:>10,.0f} pts/s  floor {floor:>12,.0f} pts/s  "
              f"ratio {rate / floor:.3f}  out/in bytes {bytes_out / bytes_in:.2f}", flush=True)
    table = render(rows, args)
    print()
    print(table)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(table)


def render(rows: list[tuple], args: argparse.Namespace) -> str:
    lines = [
        "# prometheusremotewrite: OTLP in -> remote-write bytes out (one core)",
        "",
        f"`python bench/bench_prw.py --requests {args.requests} --repeat {args.repeat}`: "
        "CPU time of parse + translate + encode + snappy per data point, no network; median "
        f"of {args.repeat} runs, process pinned to one core. Floor = upb parse + serialize of "
        "the same OTLP requests in the same run. The host is shared with other jobs, so "
        "absolute figures move by ~20% between invocations.",
        "",
        "| workload | what | data points/s | floor points/s | ratio | snappy bytes out / OTLP in |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, description, rate, floor, bytes_in, bytes_out in rows:
        lines.append(f"| {name} | {description} | {rate:,.0f} | {floor:,.0f} | "
                     f"{rate / floor:.3f} | {bytes_out / bytes_in:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
